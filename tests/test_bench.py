"""``ropo bench``: rows honour the output contract, ratios and parameter counts are right, errors are clear."""

import argparse
import json

import pytest
import torch

from ropo.errors import RoPOConfigError
from ropo.bench import commands
from ropo.bench.models import MODEL_SPECS, build_model, scaled_vocab
from ropo.bench.report import add_ratios, table
from ropo.bench.sweeps import depth_sweep, width_sweep

CONTRACT = ("method", "model", "targets", "device", "ms_per_step", "peak_memory_bytes", "trainable_params")


def _bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ropo")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    return args.func(args)


TINY = ("--models", "smollm2-135m", "--layers", "1", "--batch-size", "1", "--seq-len", "16", "--device", "cpu")


def test_bench_writes_contract_rows_with_ratios_and_parameter_counts(tmp_path, capsys):
    out = tmp_path / "bench.json"
    methods = ["floor", "lora", "ropo", "ropo_fast", "full"]
    assert _bench(*TINY, "--targets", "q,v", "--methods", *methods, "--steps", "2", "--warmup", "0",
                  "--no-memory", "--json", str(out)) == 0
    rows = json.loads(out.read_text())
    assert [row["method"] for row in rows] == methods
    for row in rows:
        assert all(key in row for key in CONTRACT)
        assert row["model"] == "smollm2-135m" and row["targets"] == "q,v" and row["device"] == "cpu"
        assert row["ms_per_step"] > 0 and len(row["ms_per_step_all"]) == 2
        assert row["peak_memory_bytes"] is None  # --no-memory
        assert row["environment"]["versions"]["torch"]
    by_method = {row["method"]: row for row in rows}
    assert by_method["lora"]["ratio_to_lora"] == 1.0 and by_method["floor"]["ratio_to_floor"] == 1.0
    assert by_method["ropo"]["ratio_to_lora"] == pytest.approx(
        by_method["ropo"]["ms_per_step"] / by_method["lora"]["ms_per_step"]
    )
    # One layer of the SmolLM2 shape: q 576→576 and v 576→192.
    assert by_method["floor"]["trainable_params"] == 0
    assert by_method["lora"]["trainable_params"] == 16 * (576 + 576) + 16 * (576 + 192)
    assert by_method["ropo"]["trainable_params"] == by_method["ropo_fast"]["trainable_params"] == 2 * (
        2 * 575 + 576 + 576  # per rotation of width 576: angles, one Householder base and offset
    ) + 576 + 192  # magnitudes
    assert by_method["full"]["trainable_params"] == by_method["full"]["total_params"]
    printed = capsys.readouterr().out
    assert "| smollm2-135m | q,v | train | ropo_fast |" in printed and str(out) in printed


def test_bench_inference_mode_times_unmerged_forward_passes(tmp_path):
    out = tmp_path / "inference.json"
    assert _bench(*TINY, "--targets", "q,v", "--methods", "floor", "ropo_fast", "full", "--steps", "1",
                  "--warmup", "0", "--no-memory", "--inference", "--json", str(out)) == 0
    rows = json.loads(out.read_text())
    assert [(r["method"], r["mode"]) for r in rows] == [("floor", "inference"), ("ropo_fast", "inference")]
    assert rows[1]["ratio_to_floor"] == pytest.approx(rows[1]["ms_per_step"] / rows[0]["ms_per_step"])


def test_bench_measures_peak_memory_in_a_process_per_method(tmp_path):
    out = tmp_path / "bench.json"
    assert _bench(*TINY, "--targets", "all-linear", "--methods", "lora", "full", "--steps", "1",
                  "--json", str(out)) == 0
    rows = {row["method"]: row for row in json.loads(out.read_text())}
    for row in rows.values():
        assert row["peak_memory_bytes"] > row["train_memory_bytes"] > 0
        assert "VmHWM" in row["memory_measure"]
    # Full fine-tuning keeps a gradient and two AdamW moments of every weight: far more than LoRA.
    weights = rows["full"]["total_params"] * 4
    assert rows["full"]["train_memory_bytes"] - rows["lora"]["train_memory_bytes"] > weights


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--methods", "lora", "qlora"), "qlora"),
        (("--models", "gpt-5"), "gpt-5"),
        (("--targets", "k_proj"), "k_proj"),
        (("--layers", "31"), "between 1 and 30"),
        (("--layers", "many"), "--layers"),
        (("--steps", "0"), "--steps"),
    ],
)
def test_bench_refuses_bad_arguments_by_name(argv, message):
    base = ["--models", "smollm2-135m", "--no-memory", "--steps", "1", "--methods", "floor"]
    with pytest.raises(RoPOConfigError, match=message):
        _bench(*base, *argv)


def test_scaled_vocab_keeps_the_head_share_and_full_size_is_exact():
    spec = MODEL_SPECS["smollm2-135m"]
    assert scaled_vocab(spec, 30) == 49152
    assert scaled_vocab(spec, 8) % 64 == 0 and 49152 * 8 / 30 <= scaled_vocab(spec, 8) < 49152 * 8 / 30 + 64
    model = build_model(spec, 2, dtype=torch.float32)
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 2
    assert model.get_output_embeddings().weight.shape == (scaled_vocab(spec, 2), 576)


def test_sweeps_time_every_case_and_normalise_per_token_coordinate():
    rows = width_sweep(tokens=32, repeats=1, widths=(64, 96))
    assert {(r["dim"], r["case"]) for r in rows} == {
        (d, c) for d in (64, 96) for c in ("reference", "auto", "linear", "lora_r16")
    }
    for row in rows:
        assert row["ms_fwd_bwd"] > 0
        assert row["ns_per_token_coordinate"] == pytest.approx(row["ms_fwd_bwd"] * 1e6 / (32 * row["dim"]))
    depth = depth_sweep(tokens=16, repeats=1, dim=64)
    reflections = {r["reflections"] for r in depth if r["givens_layout"] == "bidirectional"}
    assert reflections == {0, 2, 4, 8, 16}
    assert {r["givens_layout"] for r in depth} == {"none", "bidirectional", "butterfly"}
    none = [r for r in depth if r["givens_layout"] == "none"]
    assert all(r["givens_stages"] == 0 and r["fused_levels"] == 0 for r in none)


def test_table_and_ratios_handle_missing_references():
    rows = add_ratios([
        {"method": "ropo_fast", "model": "m", "targets": "q,v", "ms_per_step": 12.0, "trainable_params": 5},
        {"method": "lora", "model": "m", "targets": "q,v", "ms_per_step": 10.0, "trainable_params": 7},
    ])
    assert rows[0]["ratio_to_lora"] == pytest.approx(1.2) and rows[0]["ratio_to_floor"] is None
    text = table(rows)
    assert "| m | q,v | train | ropo_fast | 12.0 | 1.200 | – | – | – | 5 |" in text


def test_gpu_script_skips_cleanly_without_cuda():
    """benchmarks/gpu/run.sh is for a lent GPU; everywhere else it must say so and succeed."""
    import subprocess
    from pathlib import Path

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would run the real benchmark")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "run.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "no CUDA device here" in result.stdout
