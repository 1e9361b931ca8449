"""lm-evaluation-harness on RoPO, offline, on a tiny model with ropo's local probe tasks.

- ``ropo lm-eval --model hf --model_args pretrained=BASE,peft=ADAPTER`` (lm-eval's own command
  line, the PEFT path users write) gives per-item log-likelihoods equal to the merged model's;
- the QA probe scored through lm-eval equals ropo's own scoring of the same items.
"""

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

pytest.importorskip("lm_eval")

import ropo  # noqa: E402,F401
from ropo import RoPOConfig  # noqa: E402
from ropo.cli import main as ropo_main  # noqa: E402
from ropo.evaluation.retention import QA_INSTRUCTION, load_qa_probe, lm_eval_scores, qa_probe  # noqa: E402
from ropo.evaluation.scoring import continuation_log_likelihoods  # noqa: E402
from ropo.generation import render_prompt  # noqa: E402
from ropo.tiny_models import tiny_causal_lm, tiny_tokenizer  # noqa: E402

LIMIT = 6


def _tiny():
    return tiny_causal_lm(seed=3), tiny_tokenizer()


def _samples(output_dir: Path, task: str) -> list[dict]:
    (path,) = output_dir.rglob(f"samples_{task}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(rows, key=lambda row: row["doc_id"])


def _cli_log_likelihoods(model_args: str, output_dir: Path) -> list[float]:
    code = ropo_main([
        "lm-eval", "--model", "hf", "--model_args", model_args, "--tasks", "ropo_qa_probe_loglik",
        "--limit", str(LIMIT), "--apply_chat_template", "--log_samples", "--output_path", str(output_dir),
        "--device", "cpu", "--batch_size", "2",
    ])
    assert code == 0
    return [row["answer_log_likelihood"] for row in _samples(output_dir, "ropo_qa_probe_loglik")]


def _own_log_likelihoods(model, tokenizer) -> list[float]:
    pairs = [
        (render_prompt(tokenizer, [{"role": "user", "content": QA_INSTRUCTION + item.question}]),
         tokenizer(item.answers[0], add_special_tokens=False)["input_ids"])
        for item in load_qa_probe()[:LIMIT]
    ]
    return continuation_log_likelihoods(model, pairs)


def test_cli_adapter_log_likelihoods_equal_the_merged_models(tmp_path):
    """Also per item, the base's through lm-eval equal ropo's own (the task's prompt is the probe's)."""
    model, tokenizer = _tiny()
    own_base = _own_log_likelihoods(model, tokenizer)
    for folder in ("base", "merged"):
        tokenizer.save_pretrained(tmp_path / folder)
    model.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(model, RoPOConfig(target_modules="all-linear", init_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.merge_and_unload().save_pretrained(tmp_path / "merged")

    adapter = _cli_log_likelihoods(f"pretrained={tmp_path / 'base'},peft={tmp_path / 'adapter'}", tmp_path / "out-adapter")
    merged = _cli_log_likelihoods(f"pretrained={tmp_path / 'merged'}", tmp_path / "out-merged")
    base = _cli_log_likelihoods(f"pretrained={tmp_path / 'base'}", tmp_path / "out-base")
    assert len(adapter) == LIMIT
    torch.testing.assert_close(adapter, merged, rtol=0, atol=1e-4)
    assert max(abs(a - b) for a, b in zip(adapter, base)) > 1e-2  # the adapter was applied, not dropped
    torch.testing.assert_close(base, own_base, rtol=0, atol=1e-4)


def test_probe_through_lm_eval_equals_ropos_own_scoring():
    model, tokenizer = _tiny()
    model = get_peft_model(model, RoPOConfig(target_modules="all-linear", init_weights=False)).eval()
    items = load_qa_probe()[:LIMIT]

    scores = lm_eval_scores(model, tokenizer, ["ropo_qa"], limit=LIMIT, batch_size=2, apply_chat_template=True)

    own = qa_probe(model, tokenizer, items, batch_size=2)
    assert scores["lm_eval/ropo_qa_probe/accuracy"] == own.accuracy
    torch.testing.assert_close(
        scores["lm_eval/ropo_qa_probe_loglik/answer_log_likelihood"], own.answer_log_likelihood, rtol=0, atol=1e-4
    )


def test_help_is_lm_evals(capsys):
    assert ropo_main(["lm-eval", "--help"]) == 0
    assert "--model_args" in capsys.readouterr().out


def test_multiple_choice_through_lm_eval_equals_the_frontiers_choice_accuracy():
    """lm-eval's ``acc`` on ``ropo_qa_probe_mc`` (no chat template) is the study's choice_accuracy."""
    from ropo.evaluation.knowledge import knowledge_items

    model, tokenizer = _tiny()
    model = get_peft_model(model, RoPOConfig(target_modules="all-linear", init_weights=False)).eval()
    scores = lm_eval_scores(model, tokenizer, ["ropo_qa_probe_mc"], limit=LIMIT, batch_size=2)
    own = knowledge_items(model, tokenizer, load_qa_probe(), batch_size=4).choice_correct[:LIMIT]
    assert scores["lm_eval/ropo_qa_probe_mc/acc"] == pytest.approx(sum(own) / LIMIT)


def test_the_frontier_and_ropo_eval_take_lm_eval_tasks(tmp_path):
    """``--lm-eval TASKS`` through both commands: every frontier point (the base too) carries the
    task's score, and ``ropo eval`` of the run's final adapter gives its last point's score."""
    task, key = "ropo_qa_probe_mc", "lm_eval/ropo_qa_probe_mc/acc"
    out = tmp_path / "frontier"
    assert ropo_main(["frontier", "--quick", "--methods", "ropo-2025", "--out", str(out), "--no-progress",
                      "--lm-eval", task, "--lm-eval-limit", str(LIMIT)]) == 0
    frontier = json.loads((out / "frontier.json").read_text())
    points = frontier["points"]
    assert [p["step"] for p in points] == [0, 1, 2, 3]
    assert all(0.0 <= p[key] <= 1.0 for p in points)
    run = out / "runs" / "ropo-2025" / "seed-0"
    assert ropo_main(["eval", str(run), "--judge", "none", "--max-prompts", "1", "--max-new-tokens", "2", "--greedy",
                      "--qa-probe", "none", "--no-progress", "--output", str(tmp_path / "eval"),
                      "--lm-eval", task, "--lm-eval-limit", str(LIMIT)]) == 0
    [model] = json.loads((tmp_path / "eval" / "eval.json").read_text())["models"]
    assert model["metrics"][key] == points[-1][key]
