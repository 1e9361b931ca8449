"""One point of a frontier: every metric of one checkpoint (or of the base), with its interval.

Why a point keeps its items: the study compares methods on the same prompts and probe items,
paired (``ropo.frontier.comparisons``), and a paired interval needs each item's value, not only the
mean. A cached point therefore holds what the model produced per item (``items``: each answer with
its judge score and KL, each probe item's knowledge measures, each text passage's log-likelihood);
its metrics and their intervals are computed from the items when the study is assembled
(``summarize``), all from one set of bootstrap draws (``ropo.evaluation.replicates``).

Every answer is paired with the base's answer to the same (prompt, turn, sample): the win rates are
pairwise judgements against the base. Intervals are 95 % percentile-bootstrap intervals over prompts
(probe items, text passages for those metrics).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ropo.adapter import merged_for_inference
from ropo.evaluation import knowledge
from ropo.evaluation.drift import DEFAULT_HE_MODULES, Reference, generation_kl, layer_energies
from ropo.evaluation.judges import PointwiseJudge
from ropo.evaluation.replicates import REPLICATED_METRICS, Draws, interval, point_rows
from ropo.evaluation.retention import QAItem, lm_eval_scores
from ropo.evaluation.statistics import DEFAULT_RESAMPLES, DEFAULT_SEED
from ropo.generation import Prompt, SamplingSettings, generate
from ropo.metrics.catalogue import CATALOGUE, CI_SUFFIX, REPETITION_N
from ropo.metrics.diversity import distinct_n, repetition_rate
from ropo.metrics.energy import HE_CHANGE, he_change_summary
from ropo.metrics.lengths import length_stats

#: Bumped when what a point holds or how it is computed changes: older cached points are then not reused.
POINT_FORMAT = "ropo-frontier-point/2"
#: The untuned model's method, series and (with step 0) point.
BASE = "base"

#: Every number measured at every point, the base included (declared in the metric catalogue).
METRICS = tuple(CATALOGUE[key] for key in (
    *REPLICATED_METRICS[:5], "hit_limit_rate", "distinct_1", *REPLICATED_METRICS[5:7], "repetition",
    *REPLICATED_METRICS[7:], "he_change"))
#: TRL's training-side symptoms of over-fitting up to the checkpoint (trained points only; see
#: ``training_symptoms``): chosen and rejected log-probs both falling is DPO's known failure.
TRAINING_METRICS = tuple(CATALOGUE[key] for key in ("logps/chosen", "logps/rejected", "rewards/margins"))


@dataclass
class Evaluation:
    """What every point is measured with: the same prompts, sampling, judge, probe and text."""

    prompts: list[Prompt]
    sampling: SamplingSettings
    judge: PointwiseJudge
    probe: list[QAItem]
    probe_max_new_tokens: int
    text_passages: int
    he_modules: Sequence[str] = DEFAULT_HE_MODULES
    #: lm-evaluation-harness tasks scored at every point (``lm_eval/<task>/<metric>``, no interval).
    lm_eval_tasks: Sequence[str] = ()
    lm_eval_limit: int | None = None

    def describe(self) -> dict[str, Any]:
        """Everything that decides a point's items besides the model: part of every cache key."""
        questions = hashlib.sha256(json.dumps([[q.question, *q.answers] for q in self.probe]).encode()).hexdigest()
        return {
            "prompts": [p.id for p in self.prompts], "sampling": self.sampling.as_dict(), "judge": self.judge.name,
            "probe": {"items": len(self.probe), "sha256": questions, "max_new_tokens": self.probe_max_new_tokens,
                      "plain_max_new_tokens": knowledge.PLAIN_MAX_NEW_TOKENS, "context": knowledge.NEUTRAL_CONTEXT,
                      "choices": knowledge.CHOICES},
            "text": {"passages": len(knowledge.text_passages(self.text_passages)), "tokens": knowledge.TEXT_TOKENS,
                     "sha256": knowledge.text_fingerprint(self.text_passages), "python": sys.version.split()[0]},
            "he_modules": list(self.he_modules),
            # Only when asked for: a study without lm-eval tasks keeps the cache keys it had.
            **({"lm_eval": {"tasks": list(self.lm_eval_tasks), "limit": self.lm_eval_limit}} if self.lm_eval_tasks else {}),
        }

    def draws(self, resamples: int = DEFAULT_RESAMPLES) -> Draws:
        """The bootstrap draws every point of a study shares."""
        return Draws.shared(len(self.prompts), len(self.probe), len(knowledge.text_passages(self.text_passages)),
                            resamples, DEFAULT_SEED)


def settings_key(settings: dict[str, Any]) -> str:
    """A point's cache key: the hash of everything that decided it."""
    return hashlib.sha256(json.dumps({"format": POINT_FORMAT, **settings}, sort_keys=True).encode()).hexdigest()


def measure_items(model: nn.Module, tokenizer: PreTrainedTokenizerBase, evaluation: Evaluation,
                  base_model: nn.Module | None = None, is_base: bool = False) -> dict[str, Any]:
    """What ``model`` produced, per item: its judged answers with their KL to the base (0 for the
    base itself), its knowledge measures and its text log-likelihoods; RoPO adapters merged (the
    same model at the base model's decoding speed; the weights are restored after).
    ``base_model``: the untuned model, needed when ``model`` has no adapter to disable."""
    batch = evaluation.sampling.batch_size
    with merged_for_inference(model):
        generations = generate(model, tokenizer, evaluation.prompts, evaluation.sampling, progress=False)
        known = knowledge.knowledge_items(model, tokenizer, evaluation.probe, batch, evaluation.probe_max_new_tokens)
        text = knowledge.text_log_likelihoods(model, tokenizer, evaluation.text_passages, batch)
        harness = lm_eval_scores(model, tokenizer, evaluation.lm_eval_tasks, evaluation.lm_eval_limit, batch) \
            if evaluation.lm_eval_tasks else None
    scores = evaluation.judge.score([g.conversation() for g in generations])
    kl = [0.0] * len(generations) if is_base else generation_kl(model, Reference(model, base_model), generations, batch)
    answers = [{"prompt_id": g.prompt_id, "turn": g.turn, "sample": g.sample, "text": g.text,
                "num_tokens": g.num_tokens, "score": s, "kl": k} for g, s, k in zip(generations, scores, kl)]
    return {"answers": answers, "knowledge": known.as_dict(), "text": text, **({"lm_eval": harness} if harness else {})}


def measure_he_change(model: nn.Module, base_model: nn.Module | None, evaluation: Evaluation) -> float:
    energies = layer_energies(model, base_model, evaluation.he_modules)
    return he_change_summary(e.relative_change for e in energies)[HE_CHANGE]


def summarize(items: dict[str, Any], base_answers: Sequence[dict[str, Any]], evaluation: Evaluation,
              draws: Draws) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the point's metrics with their intervals, each replicated metric's rows for comparisons)."""
    rows = point_rows(items, base_answers, [p.id for p in evaluation.prompts], draws)
    point: dict[str, Any] = {}
    for key in REPLICATED_METRICS:
        estimate = interval(rows[key])
        point[key], point[key + CI_SUFFIX] = estimate.estimate, [estimate.low, estimate.high]
    texts = [a["text"] for a in items["answers"]]
    lengths = length_stats([a["num_tokens"] for a in items["answers"]], evaluation.sampling.max_new_tokens)
    point.update(hit_limit_rate=lengths.hit_limit_rate, distinct_1=distinct_n(texts, 1),
                 repetition=repetition_rate(texts, REPETITION_N), **items.get("lm_eval", {}))
    return point, rows


def training_symptoms(records: Sequence[dict[str, Any]], step: int, window: int) -> dict[str, float | None]:
    """``TRAINING_METRICS`` averaged over the ``window`` logged training steps up to ``step``.

    Why a window: each step logs one batch of a few pairs, so one step's log-prob swings with the
    pairs it drew; the mean over the steps since the previous checkpoint follows the trend.
    None where the run logged none.
    """
    logged = [r for r in records if step - window < r.get("step", -1) <= step and "loss" in r]
    means = {}
    for metric in TRAINING_METRICS:
        values = [r[metric.key] for r in logged if isinstance(r.get(metric.key), (int, float))]
        means[metric.key] = fmean(values) if values else None
    return means


def read_cached(path: Path, key: str) -> dict[str, Any] | None:
    """A cached point if it was computed with the settings ``key`` names (else None)."""
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # edited by hand: computed again
    return cached if isinstance(cached, dict) and cached.get("key") == key else None
