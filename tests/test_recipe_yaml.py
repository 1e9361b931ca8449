"""Recipe YAML that loaders accept and silently get wrong (issue 20): keys written twice, and a
few hundred bytes of aliases that expand to billions of values. Each is refused by `ropo train`
with the line, before anything is loaded or written."""

from pathlib import Path

import pytest

from ropo.cli import main as ropo_main

REPO = Path(__file__).resolve().parents[1]
TINY = (REPO / "configs" / "tiny.yaml").read_text()


def _train(tmp_path: Path, text: str, capsys) -> tuple[int, str, Path]:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    out = tmp_path / "run"
    code = ropo_main(["train", str(recipe), f"output_dir={out}"])
    return code, capsys.readouterr().err, out


def test_a_section_written_twice_is_an_error_naming_both_lines(tmp_path, capsys):
    text = TINY + "\ntraining:\n  beta: 0.5\n"
    first = next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith("training:"))
    last = len(text.splitlines()) - 1
    code, err, out = _train(tmp_path, text, capsys)
    assert code == 2 and "'training' is written twice" in err and f"lines {first} and {last}" in err
    assert not out.exists()


def test_a_key_written_twice_in_one_section_is_an_error(tmp_path, capsys):
    code, err, out = _train(tmp_path, TINY + "\nmodel:\n  name_or_path: a\n  name_or_path: b\n", capsys)
    assert code == 2 and "written twice" in err and not out.exists()


def test_alias_bomb_is_refused_quickly_without_printing_it(tmp_path, capsys):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 9)]
    code, err, out = _train(tmp_path, "\n".join(levels) + "\n", capsys)  # 10^9 values in 600 bytes
    assert code == 2 and "expands to more than 100,000 values" in err and len(err) < 2000
    assert not out.exists()


def test_a_recursive_alias_is_refused(tmp_path, capsys):
    code, err, _ = _train(tmp_path, "training: &t\n  inner: *t\n", capsys)
    assert code == 2 and "contains itself" in err


@pytest.mark.parametrize("text", ["base: &b {beta: 0.1}\ntraining:\n  <<: *b\n", "a: [1, 2]\nb: [1, 2]\n"])
def test_merge_keys_and_repeated_values_are_still_fine(text):
    from ropo.training.recipe import parse_yaml

    assert parse_yaml(text)
