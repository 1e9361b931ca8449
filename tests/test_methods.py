"""The method registry: the one place that knows methods by name, and adding one is one entry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ropo.methods import REGISTRY, find_method, get_method, matched_lora
from ropo.tiny_models import tiny_causal_lm

SOURCE = Path(__file__).resolve().parents[1] / "src" / "ropo"
#: Every name a method is known by: registry names, aliases and benchmark variants.
NAMES = {name for m in REGISTRY.values() for name in (m.name, *m.aliases, *(v.name for v in m.bench))}


def _name_literals(node: ast.AST) -> list[str]:
    values = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [v.value for v in values if isinstance(v, ast.Constant) and v.value in NAMES]


def test_method_names_are_compared_only_inside_the_registry():
    """``method == "ropo"``, ``m != "full"``, ``name in ("ropo", ...)`` outside ``ropo/methods.py``."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path == SOURCE / "methods.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                names = [n for side in (node.left, *node.comparators) for n in _name_literals(side)]
                if names:
                    found.append(f"{path.relative_to(SOURCE)}:{node.lineno}: {names}")
    assert found == []


def test_aliases_and_ranked_lora_resolve_to_entries():
    assert get_method("dpo") is REGISTRY["full"] and find_method("sft") is None
    assert get_method("lora-r4").peft_config().r == 4 and find_method("lora-r0") is None


@pytest.fixture(scope="module")
def matched_rank():
    return matched_lora(tiny_causal_lm("llama")).rank


def test_the_matched_lora_matches_ropos_trainable_parameters():
    """To within half of one module's rank step: some modules at rank k - 1 (PEFT's rank_pattern)."""
    from peft import get_peft_model

    def trainable(method: str, options: dict | None = None) -> int:
        model = get_peft_model(tiny_causal_lm("llama"), get_method(method).peft_config(options))
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    matched = matched_lora(tiny_causal_lm("llama"))
    ropo, uniform = trainable("ropo"), trainable(matched.method)
    assert matched.target == ropo and trainable(matched.method, matched.options()) == matched.parameters
    widest = max(layer.in_features + layer.out_features for name, layer in tiny_causal_lm("llama").named_modules()
                 if name.endswith(("q_proj", "v_proj")))
    assert abs(matched.parameters - ropo) <= widest / 2 < abs(uniform - ropo) or uniform == matched.parameters


@pytest.mark.parametrize("name", ["oft", "matched-lora"])
def test_a_new_entry_reaches_training_bench_and_frontier(name, matched_rank, tmp_path):
    """OFT and a rank-matched LoRA: one registry entry each, nothing else added for them."""
    from ropo.bench.methods import prepare, trainable_parameters
    from ropo.frontier.plan import build_plan
    from ropo.training.run import train
    from ropo.training.spec import load_spec

    method = f"lora-r{matched_rank}" if name == "matched-lora" else name
    assert trainable_parameters(prepare(method, tiny_causal_lm("llama"), "q,v")) > 0
    plan = build_plan(quick=True, methods=[method])
    assert [s.method for s in plan.series] == [method]
    spec = plan.run_spec(plan.series[0], tmp_path / "run")
    assert spec.peft_config.target_modules == {"q_proj", "v_proj"}
    one_step = load_spec(None, settings={**plan.overrides(plan.series[0], tmp_path / "run"), "training.max_steps": 1,
                                         "training.save_steps": 1})
    result = train(one_step)
    assert (result.run_dir / "adapter" / "adapter_config.json").is_file()
