"""The large knowledge-retention probe: big enough, no duplicates, apart from the task's training prompts."""

import json
import re
from pathlib import Path

from ropo.evaluation.prompts import data_path
from ropo.evaluation.retention import DEFAULT_QA_PROBE, LARGE_QA_PROBE, load_qa_probe, normalize_answer

#: Enough questions that one question moves the accuracy by about a third of a point.
MIN_QUESTIONS = 300
TASK = Path(__file__).resolve().parents[1] / "src" / "ropo" / "demo_task"
#: Words that say nothing about a question's fact, left out of the similarity below.
FUNCTION_WORDS = set("what is the a an of in on which how many does do are to for from by with and or you your who was were".split())
#: Content-word Jaccard similarity at which a probe question would be asking a training prompt's
#: fact (the old probe's "How many legs does a spider have?" vs "Do spiders have six legs?" is 1/3).
SAME_FACT_SIMILARITY = 1 / 3


def _training_prompts() -> list[str]:
    """Every user prompt the demo task trains or is evaluated on: its prompt file and its built data."""
    texts = [json.loads(line)["prompt"] for line in (TASK / "prompts.jsonl").read_text().splitlines()]
    for path in sorted((TASK / "data").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            prompt = json.loads(line)["prompt"]
            texts.append(prompt if isinstance(prompt, str) else " ".join(turn["content"] for turn in prompt))
    return sorted(set(texts))


def _questions(text: str) -> list[str]:
    """The questions inside a prompt ("Answer in at most 3 words: What is X?" → "what is x")."""
    return [normalize_answer(part) for part in re.findall(r"[^.?!:]+\?", text)]


def _content_words(text: str) -> set[str]:
    return {word.rstrip("s") for word in normalize_answer(text).split() if word not in FUNCTION_WORDS}


def _similarity(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def test_large_probe_is_large_and_has_no_duplicates():
    items = load_qa_probe(data_path(LARGE_QA_PROBE))
    questions = [normalize_answer(item.question) for item in items]
    assert len(set(questions)) == len(questions) >= MIN_QUESTIONS
    for item in items:
        answers = [normalize_answer(answer) for answer in item.answers]
        assert all(answers), item  # an answer that normalises to nothing would match any prediction
        padded = f" {normalize_answer(item.question)} "
        assert not any(f" {answer} " in padded for answer in answers), f"{item.question}: the answer is in the question"


def test_large_probe_keeps_the_shipped_probe_but_its_training_fact():
    large = {item.question for item in load_qa_probe(data_path(LARGE_QA_PROBE))}
    shipped = {item.question for item in load_qa_probe(data_path(DEFAULT_QA_PROBE))}
    assert shipped - large == {"How many legs does a spider have?"}  # the task asks "Do spiders have six legs?"


def test_large_probe_is_apart_from_the_training_prompts():
    prompts = _training_prompts()
    training_questions = {question for text in prompts for question in _questions(text)}
    normalized_prompts = [normalize_answer(text) for text in prompts]
    prompt_words = [_content_words(text) for text in prompts]
    for item in load_qa_probe(data_path(LARGE_QA_PROBE)):
        question = normalize_answer(item.question)
        assert question not in training_questions, item.question
        assert not any(question in text for text in normalized_prompts), item.question
        words = _content_words(item.question)
        closest = max(prompt_words, key=lambda other: _similarity(words, other))
        assert _similarity(words, closest) < SAME_FACT_SIMILARITY, (item.question, sorted(closest))
