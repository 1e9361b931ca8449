"""``ropo demo --quick`` end to end on a tiny random model: every output exists and is finite."""

import json
import math

import pytest

from ropo.cli import main as ropo_main
from ropo.demo.run import CONTRACT_KEYS


def test_quick_demo_writes_every_output(tmp_path, capsys):
    out = tmp_path / "demo"
    assert ropo_main(["demo", "--quick", "--model", "tiny:llama", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"base", "ropo", "dpo", "lora"}
    for method, values in metrics.items():
        for key in CONTRACT_KEYS:
            assert isinstance(values[key], (int, float)) and math.isfinite(values[key]), (method, key)
    assert metrics["ropo"]["he_change"] < 1e-6 and metrics["lora"]["he_change"] > metrics["ropo"]["he_change"]
    assert metrics["ropo"]["trainable_params"] < metrics["lora"]["trainable_params"] < metrics["dpo"]["trainable_params"]
    html = (out / "report" / "report.html").read_text()
    assert all(name in html for name in ("ropo", "dpo", "lora", "base"))
    # Beside the newcomer's pipeline check, the committed studies' plots and paired comparisons,
    # marked as the project's.
    from ropo.demo.run import COMMITTED_STUDIES

    studies = [json.loads((study / "frontier.json").read_text()) for study in COMMITTED_STUDIES]
    assert html.count("The committed frontier study (measured for the project, not by this run)") == len(studies)
    assert html.count("<img") >= sum(len(study["plots"]) for study in studies)
    paired = [study for study in studies if study.get("comparisons")]
    assert paired and all(row["rival"] in html for study in paired for row in study["comparisons"])
    assert html.count("What the paired comparisons say") == len(paired)  # the verdicts, before each table
    assert json.loads((out / "report" / "metrics.json").read_text())["committed_studies"] == [str(s) for s in COMMITTED_STUDIES]
    for method in ("ropo", "dpo", "lora"):
        assert (out / "runs" / method / "metrics.jsonl").is_file()
    assert (out / "eval" / "eval.json").is_file()
    table = (out / "summary.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| base", "| ropo", "| dpo", "| lora"]
    assert f"{metrics['ropo']['trainable_params']:,d}" in table[3]
    assert "docs/results/frontier/" in capsys.readouterr().out  # the demo names the committed study

    # Run again: finished runs are reused, not retrained.
    before = (out / "runs" / "ropo" / "train_summary.json").read_text()
    assert ropo_main(["demo", "--quick", "--model", "tiny:llama", "--out", str(out), "--methods", "ropo"]) == 0
    assert (out / "runs" / "ropo" / "train_summary.json").read_text() == before

    # A finished run is never reused for other settings, and --set is checked before anything runs.
    capsys.readouterr()
    assert ropo_main(["demo", "--quick", "--model", "tiny:llama", "--out", str(out), "--methods", "ropo",
                      "--set", "ropo:training.beta=0.2"]) == 2
    assert "runs/ropo was trained with other settings (in ['training'])" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="expected METHOD:KEY=VALUE"):
        ropo_main(["demo", "--quick", "--out", str(out), "--methods", "ropo", "--set", "lora:training.beta=0.2"])
