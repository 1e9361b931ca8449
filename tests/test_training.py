"""DPO through TRL with RoPO and the baselines: end to end, resume, DDP, reference semantics."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from peft import PeftModel

from ropo.adapter import RoPOModel
from ropo.cli import main as ropo_main
from ropo.training.spec import load_recipe
from ropo.training.run import train
from ropo.models.runs import load_run, read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def _tiny(tmp_path: Path, *overrides: str):
    return load_recipe(
        TINY,
        [f"output_dir={tmp_path / 'run'}", f"data.train={REPO / 'configs/data/tiny_prefs.jsonl'}", *overrides],
    )


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_end_to_end_ropo_run_reloads_to_the_same_logits(tmp_path):
    result = train(_tiny(tmp_path))
    run = result.run_dir
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics if "loss" in m)
    first = metrics[0]
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0 and first["rewards/margins"] == 0.0
    assert first["loss"] == pytest.approx(0.6931471805599453, abs=1e-7)  # log 2: policy == reference
    assert metrics[-2]["rewards/margins"] > 0, "six steps on an easy task should separate chosen from rejected"
    assert metrics[-2]["orthogonality_error"] <= 1e-5 and metrics[-2]["he_change"] < 1e-6
    assert {"data_chosen_mean_length", "sample_mean_length"} <= set().union(*metrics)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (run / "adapter").iterdir()}
    loaded = load_run(run)
    assert isinstance(loaded.model, PeftModel) and loaded.method == "ropo"
    assert isinstance(loaded.model.base_model, RoPOModel)
    ids = torch.tensor([[256, 72, 101, 108, 108, 111, 32, 99, 97, 116]])
    result.model.eval()
    assert torch.equal(_logits(loaded.model, ids), _logits(result.model, ids))
    environment = json.loads((run / "environment.json").read_text())
    assert environment["seed"] == 0 and environment["packages"]["trl"]


@pytest.mark.parametrize("method", ["full", "lora", "dora", "oft", "hra"])
def test_each_baseline_trains_in_the_same_harness(tmp_path, method):
    overrides = ["training.max_steps=2", "training.save_steps=10", f"method={method}", "adapter={}"]
    if method == "oft":
        overrides.append("adapter.oft_block_size=16")  # the tiny model's width is 64
    result = train(_tiny(tmp_path, *overrides))
    metrics = [m for m in read_metrics(result.run_dir) if "loss" in m]
    assert len(metrics) == 2
    if method in ("full", "lora", "dora"):
        assert metrics[0]["rewards/margins"] == 0.0
    else:  # PEFT's OFT/HRA start at I only up to rounding (two equal reflections, Cayley maps)
        assert abs(metrics[0]["rewards/margins"]) <= 1e-5
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    assert "he_change" in metrics[-1] and metrics[-1]["he_change"] > 0
    loaded = load_run(result.run_dir)
    ids = torch.tensor([[256, 65, 66, 67]])
    result.model.eval()
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(result.model, ids), rtol=0, atol=1e-5)


def test_refuses_to_overwrite_a_run(tmp_path):
    train(_tiny(tmp_path, "training.max_steps=1"))
    with pytest.raises(Exception, match="already holds a run"):
        train(_tiny(tmp_path, "training.max_steps=1"))


def _adapter_tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path):
    steps = ["training.max_steps=30", "training.save_steps=3", "sample_every=0", "metrics_every=0"]
    reference = train(_tiny(tmp_path / "a", *steps)).run_dir

    run_dir = tmp_path / "b" / "run"
    command = [sys.executable, "-m", "ropo.cli", "train", str(TINY), f"output_dir={run_dir}",
               f"data.train={REPO / 'configs/data/tiny_prefs.jsonl'}", *steps]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "checkpoint-6" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "adapter").exists(), "killed before the end, so no final adapter"
    killed_at = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert killed_at < 30

    assert ropo_main(["train", str(TINY), f"output_dir={run_dir}", f"data.train={REPO / 'configs/data/tiny_prefs.jsonl'}",
                      *steps, "--resume"]) == 0
    resumed, expected = _adapter_tensors(run_dir), _adapter_tensors(reference)
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=1e-5, atol=1e-6)
    losses = {m["step"]: m["loss"] for m in read_metrics(run_dir) if "loss" in m}
    reference_losses = {m["step"]: m["loss"] for m in read_metrics(reference) if "loss" in m}
    assert sorted(losses) == list(range(1, 31))
    for step, loss in reference_losses.items():
        assert losses[step] == pytest.approx(loss, abs=1e-5)


def test_resume_refuses_a_changed_recipe(tmp_path):
    train(_tiny(tmp_path, "training.max_steps=2", "training.save_steps=1"))
    with pytest.raises(Exception, match=r"recipe differs.*training"):
        train(_tiny(tmp_path, "training.max_steps=2", "training.save_steps=1", "training.beta=0.5"), resume=True)


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """Same global batch (2 × 2 vs 1 × 4): the same loss curve within float tolerance."""
    common = ["training.max_steps=4", "training.save_steps=10", "sample_every=0", "metrics_every=0",
              f"data.train={REPO / 'configs/data/tiny_prefs.jsonl'}"]
    single = train(_tiny(tmp_path / "single", *common, "training.per_device_train_batch_size=4")).run_dir
    ddp_dir = tmp_path / "ddp" / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/ddp_cpu.yaml"),
               "-m", "ropo.cli", "train", str(TINY), f"output_dir={ddp_dir}", *common,
               "training.per_device_train_batch_size=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ddp = {m["step"]: m["loss"] for m in read_metrics(ddp_dir) if "loss" in m}
    one = {m["step"]: m["loss"] for m in read_metrics(single) if "loss" in m}
    assert sorted(ddp) == sorted(one) == [1, 2, 3, 4]
    for step in one:
        assert ddp[step] == pytest.approx(one[step], abs=1e-5), step
    assert ddp[4] != pytest.approx(ddp[1], abs=1e-4), "the curve must move for the comparison to mean anything"


def test_merge_command_writes_a_plain_model(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    result = train(_tiny(tmp_path, "training.max_steps=3"))
    out = tmp_path / "merged"
    assert ropo_main(["merge", str(result.run_dir / "adapter"), "--base", "tiny:llama", "--out", str(out)]) == 0
    assert "its weights in float32 (--dtype" in capsys.readouterr().out  # said, whatever the base's dtype
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert type(merged).__name__ == "LlamaForCausalLM"
    ids = torch.tensor([[256, 65, 66, 67, 68]])
    result.model.eval()
    torch.testing.assert_close(_logits(merged, ids), _logits(result.model, ids), rtol=0, atol=1e-5)


def _losses(tmp_path, *overrides):
    result = train(_tiny(tmp_path, "training.max_steps=2", "training.save_steps=10", "sample_every=0", "metrics_every=0", *overrides))
    return [m["loss"] for m in read_metrics(result.run_dir) if "loss" in m]


def test_trl_loss_options_pass_through(tmp_path):
    """At step 1 the policy equals the reference, so each loss has a known value."""
    sigmoid = _losses(tmp_path / "sigmoid")
    assert sigmoid[0] == pytest.approx(0.6931471805599453, abs=1e-6)  # -log σ(0)
    ipo = _losses(tmp_path / "ipo", "training.loss_type=ipo")
    assert ipo[0] == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-6)  # (0 − 1/(2β))²
    hinge = _losses(tmp_path / "hinge", "training.loss_type=hinge")
    assert hinge[0] == pytest.approx(1.0, abs=1e-6)  # relu(1 − β·0)
    rpo = _losses(tmp_path / "rpo", "training.loss_type=[sigmoid, sft]")
    assert rpo[0] > sigmoid[0] + 1.0  # adds the chosen answers' NLL
    smoothed = _losses(tmp_path / "robust", "training.loss_type=robust", "training.label_smoothing=0.2")
    assert smoothed[0] == pytest.approx(sigmoid[0], abs=1e-6) and smoothed[1] != pytest.approx(sigmoid[1], abs=1e-6)
    ld = _losses(tmp_path / "ld", "training.ld_alpha=0.5")
    assert ld[1] != pytest.approx(sigmoid[1], abs=1e-6)


def test_eval_of_a_full_run_compares_with_the_recipes_base(tmp_path):
    """Without --base, ``ropo eval`` of a full fine-tuning run measures against the base named in
    its recipe: comparing the tuned weights with themselves would report an HE change of 0."""
    run = train(_tiny(tmp_path, "training.max_steps=2", "training.save_steps=10", "method=full", "adapter={}")).run_dir
    out = tmp_path / "eval"
    args = ["eval", str(run), "--judge", "none", "--max-prompts", "2", "--samples", "1", "--max-new-tokens", "4",
            "--qa-probe", "none", "--output", str(out)]
    assert ropo_main(args) == 0
    metrics = json.loads((out / "eval.json").read_text())["models"][0]["metrics"]
    assert metrics["he_change"] > 0 and metrics["he_change_max"] >= metrics["he_change"]
    assert metrics["kl"] > 0
