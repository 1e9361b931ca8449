"""Generation, scoring, judges, retention, drift and exports on tiny random models."""

import copy
import json
import math
import sys
import types

import pytest
import torch
from conftest import train_steps
from transformers import LlamaConfig, LlamaForSequenceClassification

from ropo import RoPOConfig, get_ropo_model
from ropo.evaluation import (
    Candidate,
    Evaluation,
    EvaluationError,
    Prompt,
    Reference,
    RewardModelJudge,
    SamplingSettings,
    evaluate_models,
    generate,
    generation_kl,
    layer_energies,
    lm_eval_scores,
    load_judge,
    load_prompts,
    load_qa_probe,
    judged_preferences,
    orthogonality_error,
    write_exports,
)
from ropo.generation import GenerationError, _split_answer, render_prompt
from ropo.evaluation.retention import answer_matches, normalize_answer
from ropo.evaluation.scoring import continuation_log_likelihoods
from ropo.evaluation.measure import measure_items, summarize
from ropo.evaluation.replicates import REPLICATED_METRICS
from ropo.metrics.catalogue import CATALOGUE, CI_SUFFIX
from ropo.tiny_models import tiny_causal_lm, tiny_tokenizer

PROMPTS = [Prompt(1, ("hi",), "t"), Prompt(2, ("tell me a long story please",), "t"), Prompt(3, ("why?",), "t")]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def base():
    return tiny_causal_lm(vocab_size=262)


@pytest.fixture(scope="module")
def trained_ropo():
    model = get_ropo_model(tiny_causal_lm(vocab_size=262), RoPOConfig())
    train_steps(model, torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(0)), steps=3, lr=0.05)
    return model


@pytest.fixture(scope="module")
def tuned_full(base):
    model = copy.deepcopy(base)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    train_steps(model, torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(1)), steps=3, lr=0.01)
    return model


def reward_model(tokenizer, pad=True, labels=1):
    config = LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=262, num_labels=labels, pad_token_id=tokenizer.pad_token_id if pad else None,
    )
    torch.manual_seed(7)
    return LlamaForSequenceClassification(config).eval()


# ------------------------------------------------------------------ generation
def test_batched_left_padded_greedy_equals_one_prompt_at_a_time(base, tokenizer):
    settings = SamplingSettings(max_new_tokens=6, do_sample=False, samples_per_prompt=1, batch_size=3)
    batched = generate(base, tokenizer, PROMPTS, settings, progress=False)
    single = [g for p in PROMPTS for g in generate(base, tokenizer, [p], settings, progress=False)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.text for g in batched] == [g.text for g in single]
    for g in batched:
        assert g.prompt_token_ids == render_prompt(tokenizer, g.messages)
        assert g.hit_limit == (g.num_tokens == 6)


def test_sampling_is_seeded_and_recorded(base, tokenizer):
    settings = SamplingSettings(max_new_tokens=8, samples_per_prompt=2, batch_size=4, seed=3)
    first = generate(base, tokenizer, PROMPTS, settings, progress=False)
    again = generate(base, tokenizer, PROMPTS, settings, progress=False)
    other = generate(base, tokenizer, PROMPTS, SamplingSettings(max_new_tokens=8, samples_per_prompt=2, batch_size=4, seed=4), progress=False)
    assert [g.text for g in first] == [g.text for g in again]
    assert [g.text for g in first] != [g.text for g in other]
    assert [(g.prompt_id, g.sample) for g in first] == [(p.id, s) for s in range(2) for p in PROMPTS]
    assert settings.as_dict()["seed"] == 3 and settings.as_dict()["top_p"] == 0.9


def test_answers_end_at_the_stop_token():
    eos = 9
    assert _split_answer([5, 6, eos, 0, 0], {eos}) == ([5, 6, eos], 2, False)
    assert _split_answer([5, 6, 7], {eos}) == ([5, 6, 7], 3, True)


def test_second_turn_sees_the_first_answer(base, tokenizer):
    settings = SamplingSettings(max_new_tokens=4, samples_per_prompt=2, batch_size=8)
    answers = generate(base, tokenizer, [Prompt(81, ("first?", "second?"), "mt")], settings, progress=False)
    for sample in range(2):
        first, second = (next(g for g in answers if g.turn == t and g.sample == sample) for t in (0, 1))
        assert second.messages == [*first.conversation(), {"role": "user", "content": "second?"}]


def test_bad_sampling_settings_are_refused():
    with pytest.raises(GenerationError, match="needs do_sample"):
        SamplingSettings(do_sample=False, samples_per_prompt=2)
    with pytest.raises(GenerationError, match="temperature"):
        SamplingSettings(temperature=0)


# ------------------------------------------------------------------ prompts
def test_prompt_files_of_each_benchmark(tmp_path):
    ours = tmp_path / "p.jsonl"
    ours.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert [(p.id, p.turns, p.dataset) for p in load_prompts(ours)] == [(1, ("a",), "p"), (2, ("b",), "p")]
    alpaca = tmp_path / "alpaca_eval.json"
    alpaca.write_text(json.dumps([{"instruction": "x", "output": "ref", "dataset": "helpful_base"}]))
    assert load_prompts(alpaca)[0] == Prompt(1, ("x",), "helpful_base")
    mt = tmp_path / "question.jsonl"
    mt.write_text('{"question_id": 81, "category": "writing", "turns": ["one", "two"]}\n')
    assert load_prompts(mt)[0] == Prompt(81, ("one", "two"), "question")
    assert len(load_prompts()) >= 20 and len(load_prompts(limit=3)) == 3


def test_bad_prompt_files_name_the_row(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no key"}\n')
    with pytest.raises(EvaluationError, match=r"bad.jsonl: row 2: needs one of the keys"):
        load_prompts(bad)
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"id": 5, "prompt": "a"}\n{"id": 5, "prompt": "b"}\n')
    with pytest.raises(EvaluationError, match="prompt id 5 appears more than once"):
        load_prompts(twice)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(EvaluationError, match=r"line 2: not valid JSON"):
        load_prompts(broken)


# ------------------------------------------------------------------ scoring and drift
def _manual_log_probs(model, context, continuation):
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(context) - 1 : -1]
    return torch.log_softmax(logits.float(), -1)


def test_batched_log_likelihood_equals_unpadded(base):
    pairs = [([3, 4, 5], [6, 7]), ([1], [2, 3, 4, 5, 6]), ([9, 9, 9, 9, 9, 9], [1])]
    batched = continuation_log_likelihoods(base, pairs, batch_size=3)
    for (context, continuation), value in zip(pairs, batched):
        manual = _manual_log_probs(base, context, continuation).gather(-1, torch.tensor(continuation)[:, None]).sum()
        assert value == pytest.approx(float(manual), abs=1e-4)


def test_kl_is_zero_at_init_and_matches_a_manual_sum_after_training(trained_ropo, tuned_full, base, tokenizer):
    settings = SamplingSettings(max_new_tokens=5, samples_per_prompt=1, batch_size=4)
    fresh = get_ropo_model(tiny_causal_lm(vocab_size=262), RoPOConfig())
    answers = generate(fresh, tokenizer, PROMPTS, settings, progress=False)
    assert max(abs(v) for v in generation_kl(fresh, Reference(fresh), answers, batch_size=2)) < 1e-6

    for policy, reference in ((trained_ropo, Reference(trained_ropo)), (tuned_full, Reference(tuned_full, base))):
        answers = generate(policy, tokenizer, PROMPTS, settings, progress=False)
        kls = generation_kl(policy, reference, answers, batch_size=2)
        g = answers[1]
        log_p = _manual_log_probs(policy, g.prompt_token_ids, g.token_ids)
        with reference.model() as ref:
            log_q = _manual_log_probs(ref, g.prompt_token_ids, g.token_ids)
        assert kls[1] == pytest.approx(float((log_p.exp() * (log_p - log_q)).sum()), rel=1e-3)
        assert min(kls) > 0


def test_reference_needs_an_adapter_or_a_base(tuned_full):
    with pytest.raises(EvaluationError, match="pass the base model"):
        Reference(tuned_full)


def test_energy_change_on_three_neurons_by_hand():
    class Toy(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.proj = torch.nn.Linear(2, 3, bias=False)
            self.proj.weight.data = torch.tensor(weight)

    before = Toy([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])  # unit rows e1, e2, -e1
    after = Toy([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # unit rows e1, e2, (e1+e2)/√2
    (energy,) = layer_energies(after, before, modules=["proj"])
    base_he = 2 * (2 / math.sqrt(2) + 1 / 2)  # distances √2, 2, √2; each pair counted twice
    tuned_he = 2 * (1 / math.sqrt(2) + 2 / math.sqrt(2 - math.sqrt(2)))  # distances √2, √(2−√2), √(2−√2)
    assert (energy.name, energy.base, energy.adapted) == ("proj", pytest.approx(base_he), pytest.approx(tuned_he))
    assert energy.relative_change == pytest.approx((tuned_he - base_he) / base_he)
    with pytest.raises(EvaluationError, match="needs the base model"):
        layer_energies(after, None, modules=["proj"])


def test_ropo_keeps_energy_where_lora_moves_it(trained_ropo):
    energies = layer_energies(trained_ropo)
    assert [e.name for e in energies] == list(trained_ropo.adapter_layers())
    assert max(abs(e.relative_change) for e in energies) < 1e-6
    assert 0 < orthogonality_error(trained_ropo) < 1e-5

    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_causal_lm(vocab_size=262), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    energies = {e.name: e for e in layer_energies(lora)}
    merged = copy.deepcopy(lora).merge_and_unload()
    plain = tiny_causal_lm(vocab_size=262)
    from ropo.metrics import hyperspherical_energy

    for name, energy in energies.items():
        assert energy.adapted == pytest.approx(hyperspherical_energy(merged.get_submodule(name).weight), rel=1e-9)
        assert energy.base == pytest.approx(hyperspherical_energy(plain.get_submodule(name).weight), rel=1e-12)
        assert abs(energy.relative_change) > 1e-5
    assert orthogonality_error(lora) is None


# ------------------------------------------------------------------ judges
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    [{"role": "user", "content": "a longer question here"}, {"role": "assistant", "content": "ok"}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a much longer answer than the others"}],
]


def test_reward_model_judge_scores_like_unpadded_forward(tokenizer):
    model = reward_model(tokenizer)
    judge = RewardModelJudge(model, tokenizer, batch_size=3)
    scores = judge.score(CONVERSATIONS)
    for conversation, score in zip(CONVERSATIONS, scores):
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            assert score == pytest.approx(float(model(input_ids=ids).logits[0, 0]), abs=1e-5)
    assert RewardModelJudge(reward_model(tokenizer, pad=False), tokenizer).score(CONVERSATIONS) == pytest.approx(scores, abs=1e-5)
    best = max(range(3), key=scores.__getitem__)
    assert judge.compare([CONVERSATIONS[best]] * 3, CONVERSATIONS) == [0.5 if i == best else 1.0 for i in range(3)]
    assert judged_preferences(judge, CONVERSATIONS, CONVERSATIONS) == [0.5, 0.5, 0.5]


def test_reward_model_with_several_labels_is_refused(tokenizer):
    with pytest.raises(EvaluationError, match="num_labels=2"):
        RewardModelJudge(reward_model(tokenizer, labels=2), tokenizer)


class LongerAnswerWins:
    """A programmatic judge, as a task would plug in: the longer final answer wins."""

    name = "longer"

    def compare(self, candidates, baselines):
        sizes = [(len(a[-1]["content"]), len(b[-1]["content"])) for a, b in zip(candidates, baselines)]
        return [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in sizes]


def test_programmatic_judges_plug_in(monkeypatch):
    shifted = CONVERSATIONS[1:] + CONVERSATIONS[:1]  # answers "ok", "a much longer…", "hello"
    # hello vs ok: win; ok vs long: loss; long vs hello: win
    assert judged_preferences(LongerAnswerWins(), CONVERSATIONS, shifted) == [1.0, 0.0, 1.0]
    module = types.ModuleType("my_task_judges")
    module.LongerAnswerWins = LongerAnswerWins
    module.not_a_judge = lambda: object()
    monkeypatch.setitem(sys.modules, "my_task_judges", module)
    assert isinstance(load_judge("my_task_judges:LongerAnswerWins"), LongerAnswerWins)
    assert load_judge("none") is None
    with pytest.raises(EvaluationError, match="has no 'name' and 'compare"):
        load_judge("my_task_judges:not_a_judge")
    with pytest.raises(EvaluationError, match="use 'none', 'rm:"):
        load_judge("nonsense")


# ------------------------------------------------------------------ retention
def test_answer_matching_by_hand():
    assert normalize_answer("The  Pacific Ocean!") == "pacific ocean"
    assert answer_matches("It is Paris.", ["Paris"])
    assert not answer_matches("Parisian food", ["Paris"])  # whole words only
    assert answer_matches("I think the answer is seven", ["7", "seven"])
    assert not answer_matches("", ["Paris"])


def test_shipped_qa_probe_and_bad_files(tmp_path):
    items = load_qa_probe()
    assert len(items) == 40 and all(item.question and item.answers for item in items)
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"question": "q?", "answers": []}\n')
    with pytest.raises(EvaluationError, match="row 1: 'answers' must be a non-empty list"):
        load_qa_probe(bad)
    with pytest.raises(EvaluationError, match=r"too few distinct answers for 3 distractors of question 1 .*at least 4"):
        _evaluation(PROMPTS, probe=items[:3])  # when the evaluation is set up, before any model loads


def test_lm_eval_hook_without_the_harness_names_the_extra(monkeypatch, base, tokenizer):
    """With the harness, tests/test_lm_eval.py runs it for real."""
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(EvaluationError, match=r"pip install 'ropo\[eval\]'"):
        lm_eval_scores(base, tokenizer, ["arc_easy"])


# ------------------------------------------------------------------ exports and the whole run
MT_PROMPTS = [Prompt(81, ("write a poem", "now shorter"), "mt_bench"), Prompt(82, ("add 2 and 2",), "mt_bench")]


def test_alpaca_eval_and_mt_bench_files_read_back(base, tokenizer, tmp_path):
    answers = generate(base, tokenizer, MT_PROMPTS, SamplingSettings(max_new_tokens=4, samples_per_prompt=2), progress=False)
    paths = write_exports(tmp_path, "tiny", MT_PROMPTS, answers)
    outputs = json.loads(paths["alpaca_eval"].read_text())
    assert paths["alpaca_eval"] == tmp_path / "alpaca_eval" / "tiny" / "model_outputs.json"
    assert [o["instruction"] for o in outputs] == ["write a poem", "add 2 and 2"]
    first = {(g.prompt_id, g.turn): g.text for g in answers if g.sample == 0}
    assert [o["output"] for o in outputs] == [first[81, 0], first[82, 0]]
    assert all(o["generator"] == "tiny" and isinstance(o["dataset"], str) for o in outputs)

    assert paths["mt_bench"] == tmp_path / "mt_bench" / "model_answer" / "tiny.jsonl"
    records = [json.loads(line) for line in paths["mt_bench"].read_text().splitlines()]
    assert [r["question_id"] for r in records] == [81, 82]
    for record, prompt in zip(records, MT_PROMPTS):
        assert record["model_id"] == "tiny" and isinstance(record["answer_id"], str) and isinstance(record["tstamp"], float)
        assert [c["index"] for c in record["choices"]] == [0, 1]
        assert all(len(c["turns"]) == len(prompt.turns) for c in record["choices"])
    texts = {(g.prompt_id, g.sample, g.turn): g.text for g in answers}
    assert records[0]["choices"][1]["turns"] == [texts[81, 1, 0], texts[81, 1, 1]]


def _evaluation(prompts, tokenizer=None, **changes) -> Evaluation:
    settings = dict(prompts=prompts, sampling=SamplingSettings(max_new_tokens=6, samples_per_prompt=2, batch_size=8),
                    judge=RewardModelJudge(reward_model(tokenizer), tokenizer) if tokenizer is not None else None,
                    probe=load_qa_probe()[:4], probe_max_new_tokens=4, text_passages=3)
    return Evaluation(**{**settings, **changes})


def test_evaluate_models_writes_every_result(trained_ropo, tuned_full, base, tokenizer, tmp_path):
    evaluation = _evaluation(PROMPTS, tokenizer)
    candidates = [
        Candidate("ropo", trained_ropo, tokenizer, method="ropo"),
        Candidate("full", tuned_full, tokenizer, method="full", base_model=base),
        Candidate("lonely", tuned_full, tokenizer, method="full"),
    ]
    results = evaluate_models(candidates, evaluation, tmp_path, baseline=Candidate("base", base, tokenizer), progress=False)
    document = json.loads((tmp_path / "eval.json").read_text())
    assert [m["name"] for m in document["models"]] == ["base", "ropo", "full", "lonely"]
    assert document["sampling"]["samples_per_prompt"] == 2 and document["judge"] == "reward-model"
    assert document["format"] == "ropo-eval/3"
    by_name = {m["name"]: m for m in document["models"]}
    # One name per measurement: eval.json's keys are the catalogue's (an interval is its metric's
    # key + "_ci"), as in every other result file (lm-eval's scores keep lm-eval's names).
    keys = {key for m in document["models"] for key in m["metrics"]}
    assert {key.removesuffix(CI_SUFFIX) for key in keys} <= set(CATALOGUE)
    for name in ("ropo", "full"):
        metrics = by_name[name]["metrics"]
        # The measurement core's metrics, the frontier's: each with its interval where it has one.
        for key in REPLICATED_METRICS:
            low, high = metrics[key + CI_SUFFIX]
            assert low <= metrics[key] <= high, (name, key)
        for key in ("hit_limit_rate", "distinct_1", "he_change"):
            assert metrics[key] is not None, (name, key)
        assert len(by_name[name]["he_layers"]) == 4
    assert by_name["ropo"]["metrics"]["he_change_max"] < 1e-6 < by_name["full"]["metrics"]["he_change_max"]
    assert by_name["ropo"]["metrics"]["orthogonality_error"] < 1e-5 and by_name["full"]["metrics"]["orthogonality_error"] is None
    lonely = by_name["lonely"]["metrics"]
    assert "kl" not in lonely and "he_change" not in lonely and "pass --base" in by_name["lonely"]["notes"][0]
    assert "win_rate" in lonely  # against the baseline, which needs no base
    # The baseline's answers judged against themselves: every pair a tie, the line the others are read against.
    base_metrics = by_name["base"]["metrics"]
    assert by_name["base"]["role"] == "baseline" and base_metrics["win_rate"] == base_metrics["lc_win_rate"] == 0.5
    assert "choice_accuracy" in base_metrics and "kl" not in base_metrics
    lines = (tmp_path / "generations" / "ropo.jsonl").read_text().splitlines()
    assert len(lines) == len(PROMPTS) * 2 == len(results[1].generations)
    for name in ("base", "ropo", "full", "lonely"):
        assert (tmp_path / "alpaca_eval" / name / "model_outputs.json").is_file()
        assert (tmp_path / "mt_bench" / "model_answer" / f"{name}.jsonl").is_file()
    with pytest.raises(EvaluationError, match="two models are named 'ropo'"):
        evaluate_models([candidates[0]] * 2, _evaluation(PROMPTS[:1], probe=(), text_passages=0), tmp_path / "x",
                        progress=False)


def test_ropo_eval_and_the_frontier_measure_alike(trained_ropo, base, tokenizer, tmp_path):
    """One core: ``ropo eval``'s numbers for a model are the measurement core's for the same items
    (what a frontier point is computed from), and a pairwise judge gives win rates through it too."""
    evaluation = _evaluation(PROMPTS, tokenizer)
    result = evaluate_models([Candidate("ropo", trained_ropo, tokenizer, method="ropo")], evaluation, tmp_path,
                             progress=False)[0]
    measured = measure_items(trained_ropo, tokenizer, evaluation, Reference(trained_ropo))
    with trained_ropo.disable_adapter():
        base_answers = measure_items(trained_ropo, tokenizer, evaluation, is_base=True).items["answers"]
    point = summarize(measured.items, base_answers, evaluation, evaluation.draws())
    assert {k: v for k, v in result.metrics.items() if k in point.metrics} == point.metrics

    pairwise = _evaluation(PROMPTS, judge=LongerAnswerWins(), probe=(), text_passages=0)
    judged = evaluate_models([Candidate("ropo", trained_ropo, tokenizer, method="ropo")], pairwise, tmp_path / "p",
                             progress=False)[0].metrics
    assert 0.0 <= judged["win_rate"] <= 1.0 and "judge_score" not in judged and "choice_accuracy" not in judged


def test_cli_eval_then_report(tmp_path, capsys):
    from ropo.cli import main

    out = tmp_path / "eval"
    args = ["eval", "tiny:llama", "--max-prompts", "2", "--samples", "2", "--max-new-tokens", "5",
            "--judge", "none", "--output", str(out), "--no-progress"]
    assert main(args + ["--qa-probe", "none"]) == 0
    document = json.loads((out / "eval.json").read_text())
    assert document["prompts"]["count"] == 2 and document["sampling"]["max_new_tokens"] == 5
    (model,) = document["models"]
    assert model["metrics"]["mean_length"] <= 5 and "pass --base" in model["notes"][0]
    assert main(["report", str(out), "--output", str(tmp_path / "report")]) == 0
    assert "tiny:llama" in (tmp_path / "report" / "report.html").read_text()
    # the same model as baseline and candidate: refused with a message, not a traceback
    assert main(args + ["--qa-probe", "none", "--baseline", "tiny:llama"]) == 2
    assert "two models are named 'tiny:llama'" in capsys.readouterr().err
    # A probe too small for its multiple choice: one line naming the file, before any model loads.
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"question": f"q{i}?", "answers": [f"a{i}"]}) + "\n" for i in range(3)))
    assert main(args + ["--qa-probe", str(small), "--output", str(tmp_path / "none")]) == 2
    error = capsys.readouterr().err
    assert f"--qa-probe {small}: the QA probe has too few distinct answers" in error and "Traceback" not in error
    assert not (tmp_path / "none").exists()
