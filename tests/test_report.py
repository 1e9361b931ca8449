"""The HTML report: every run and plot present, the best values marked, and it renders in Chromium."""

import base64
import io
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from ropo.evaluation import EvaluationError, build_report
from ropo.evaluation.report import COLUMNS, collect_runs

PLOTS = [
    "Reward margin over training",
    "Chosen and rejected rewards over training",
    "Generation length over training",
    "Win rate vs length",
    "HE change per layer",
]


def write_run(directory, margin_slope, length_slope, he_change):
    directory.mkdir(parents=True)
    records = [
        {"step": step, "loss": 0.69 - 0.002 * step, "rewards/margins": margin_slope * step,
         "rewards/chosen": 0.4 * margin_slope * step, "rewards/rejected": -0.6 * margin_slope * step,
         "sample_mean_length": 40 + length_slope * step,
         **({"he_change": abs(he_change), "he_change/model.layers.0.self_attn.q_proj": he_change} if step else {})}
        for step in range(0, 60, 10)
    ]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def eval_entry(name, role="candidate", **metrics):
    layers = [{"name": f"model.layers.{i}.self_attn.q_proj", "base": 10.0, "adapted": 10.0, "change": 0.0,
               "relative_change": metrics.get("he_change", 0.0) * (i + 1)} for i in range(2)]
    return {"name": name, "source": name, "method": name, "role": role, "metrics": metrics,
            "he_layers": layers if role == "candidate" else [], "notes": []}


@pytest.fixture
def report_inputs(tmp_path):
    write_run(tmp_path / "runs" / "ropo", 0.01, 0.02, 1e-8)
    write_run(tmp_path / "runs" / "dpo-full", 0.03, 0.5, 4e-3)
    document = {
        "format": "ropo-eval/3", "judge": "rm:tiny", "baseline": "sft", "prompts": {"count": 24},
        "sampling": {"max_new_tokens": 256, "temperature": 0.7},
        "models": [
            eval_entry("sft", role="baseline", mean_length=80.0, self_bleu=5.0, hit_limit_rate=0.0),
            eval_entry("ropo", win_rate=0.61, mean_length=95.0, hit_limit_rate=0.05, self_bleu=12.0,
                       kl=0.4, he_change=2e-8, orthogonality_error=3e-7, choice_accuracy=0.5,
                       choice_accuracy_ci=[0.375, 0.625]),
            eval_entry("dpo-full", win_rate=0.58, mean_length=180.0, hit_limit_rate=0.05, self_bleu=30.0,
                       kl=6.0, he_change=5e-3, orthogonality_error=None, choice_accuracy=0.4),
        ],
    }
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text(json.dumps(document))
    return [tmp_path / "runs" / "ropo", tmp_path / "runs" / "dpo-full", tmp_path / "eval"], tmp_path / "report"


def test_report_has_every_run_and_plot(report_inputs):
    paths, output = report_inputs
    report, metrics = build_report(paths, output)
    page = report.read_text()
    for name in ("ropo", "dpo-full", "sft"):
        assert f"<th>{name}" in page
    images = re.findall(r"<figcaption>([^<]+)</figcaption><img alt='[^']*' src='data:image/png;base64,([^']+)'>", page)
    assert [title for title, _ in images] == PLOTS
    for _, data in images:
        width, height = Image.open(io.BytesIO(base64.b64decode(data))).size
        assert width > 300 and height > 200
    assert "http://" not in page and "https://" not in page  # self-contained
    # A metric with an interval shows it, in the metric's own format; one without shows the value alone.
    assert "50.0% <span class=role>[37.5%, 62.5%]</span>" in page and ">40.0%</td>" in page
    summary = json.loads(metrics.read_text())
    assert [r["name"] for r in summary["runs"]] == ["ropo", "dpo-full", "sft"]
    assert summary["plots"] == PLOTS
    # The same images as PNG files, for pages that embed them.
    files = [output / name for name in summary["plot_files"]]
    assert [f.name for f in files] == [
        "reward-margin-over-training.png", "chosen-and-rejected-rewards-over-training.png",
        "generation-length-over-training.png", "win-rate-vs-length.png", "he-change-per-layer.png",
    ]
    assert [base64.b64encode(f.read_bytes()).decode() for f in files] == [data for _, data in images]
    ropo = summary["runs"][0]["metrics"]
    assert ropo["reward_margin"] == pytest.approx(0.5) and ropo["win_rate"] == 0.61  # last logged margin: 0.01 × 50


def test_best_values_are_marked_by_direction(report_inputs):
    paths, output = report_inputs
    _, metrics = build_report(paths, output)
    best = json.loads(metrics.read_text())["best"]
    assert best["win_rate"] == ["ropo"]  # higher is better
    assert best["kl"] == ["ropo"] and best["self_bleu"] == ["ropo"]  # lower is better
    assert best["reward_margin"] == ["dpo-full"]
    assert "hit_limit_rate" not in best  # a tie marks nothing
    assert "mean_length" not in best  # no better direction
    assert "orthogonality_error" not in best  # only one run has a value
    page = (output / "report.html").read_text()
    assert page.count("class=best") == sum(len(v) for v in best.values())
    assert "<b>ropo</b> best on Win rate vs baseline (ropo 61.0%, dpo-full 58.0%)" in page


def test_he_per_layer_falls_back_to_training_log(tmp_path):
    write_run(tmp_path / "only-train", 0.01, 0.1, 2e-3)
    runs, _ = collect_runs([tmp_path / "only-train"])
    assert runs[0].he_layers() == {"model.layers.0.self_attn.q_proj": 2e-3}
    assert runs[0].evaluation is None


def test_bad_inputs_name_the_file_and_line(tmp_path):
    with pytest.raises(EvaluationError, match="neither a training run"):
        build_report([tmp_path], tmp_path / "out")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"loss": 0.5}\n')
    with pytest.raises(EvaluationError, match=r"metrics.jsonl: line 2: expected an object with an integer 'step'"):
        build_report([run], tmp_path / "out")
    write_run(tmp_path / "a" / "ropo", 0.01, 0.1, 0.0)
    write_run(tmp_path / "b" / "ropo", 0.01, 0.1, 0.0)
    with pytest.raises(EvaluationError, match="two training runs are named 'ropo'"):
        build_report([tmp_path / "a" / "ropo", tmp_path / "b" / "ropo"], tmp_path / "out")
    (tmp_path / "eval.json").write_text('{"models": [{"name": "x"}]}')
    with pytest.raises(EvaluationError, match=r"models\[0\] needs a 'name' and a 'metrics'"):
        build_report([tmp_path / "eval.json"], tmp_path / "out")
    for old in ('"ropo-eval/1", "models": [{"name": "x", "metrics": {"kl_to_reference": 1}}]',
                '"ropo-eval/2", "models": [{"name": "x", "metrics": {"retention_accuracy": 1}}]'):
        (tmp_path / "eval.json").write_text('{"format": ' + old + '}')
        with pytest.raises(EvaluationError, match=r"eval.json: written as 'ropo-eval/[12]', this ropo reads "
                                                  r"'ropo-eval/3'; run `ropo eval` again"):
            build_report([tmp_path / "eval.json"], tmp_path / "out")


def test_every_known_metric_has_a_label_and_direction():
    keys = [c.key for c in COLUMNS]
    assert len(keys) == len(set(keys)) and all(c.direction in (-1, 0, 1) and c.label for c in COLUMNS)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium) to render the report")
def test_report_renders_in_headless_chromium(report_inputs, tmp_path):
    paths, output = report_inputs
    report, _ = build_report(paths, output)
    shot = tmp_path / "shot.png"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
               report.resolve().as_uri()]
    # Chromium's first start sets up its profile and font caches: seconds when idle, minutes on a
    # busy machine (a loaded CI run once went past 60 s). The limit only stops a hung browser, so
    # it is generous, and a start that times out is tried once more (the caches are warm then).
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 500  # text, table shading and plots, not a blank page
    white = sum(count for count, colour in colours if colour == (255, 255, 255))
    assert white < 0.9 * image.size[0] * image.size[1]


def test_a_key_logged_once_is_not_drawn_as_a_curve():
    from ropo.evaluation.plots import Series, training_curve

    once = Series("once", 0, [{"step": 12, "sample_mean_length": 40.0}, {"step": 12, "loss": 0.6}])
    twice = Series("twice", 1, [{"step": 4, "sample_mean_length": 40.0}, {"step": 8, "sample_mean_length": 44.0}])
    assert training_curve(once, "sample_mean_length") == ([], [])
    assert training_curve(twice, "sample_mean_length") == ([4, 8], [40.0, 44.0])
