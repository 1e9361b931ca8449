"""The metric catalogue: each metric declared once, with its key, label, direction and interval.

Every result file (``eval.json``, a frontier point, the demo's ``metrics.json``), table, summary
and plot names a metric by its key here (a test checks it); a table keeps only its own header and
number format. (lm-eval's scores keep lm-eval's own names, under ``lm_eval/``.)
"""

from __future__ import annotations

from dataclasses import dataclass

#: Word n-grams counted by the repetition metric.
REPETITION_N = 3
#: A point holds ``key + CI_SUFFIX`` ([low, high]) for a metric with an interval.
CI_SUFFIX = "_ci"


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str
    direction: int = 0  # +1 higher is better, −1 lower is better, 0 neither
    interval: bool = False  # measured with a 95 % bootstrap interval (``key + CI_SUFFIX``)


CATALOGUE: dict[str, MetricSpec] = {m.key: m for m in (
    MetricSpec("kl", "KL(π ‖ base) per answer (nats)", -1, True),
    MetricSpec("judge_score", "judge score (mean)", +1, True),
    MetricSpec("win_rate", "win rate vs base", +1, True),
    MetricSpec("lc_win_rate", "length-controlled win rate vs base", +1, True),
    MetricSpec("mean_length", "mean answer length (tokens)", 0, True),
    MetricSpec("hit_limit_rate", "share of answers cut at the token limit", -1),
    MetricSpec("distinct_1", "distinct-1", +1),
    MetricSpec("distinct_2", "distinct-2", +1, True),
    MetricSpec("self_bleu", "self-BLEU between samples", -1, True),
    MetricSpec("repetition", f"repeated {REPETITION_N}-grams within an answer", -1),
    # Forgetting split into what each measure measures (``ropo.evaluation.knowledge``).
    MetricSpec("brevity_accuracy", "QA accuracy under the brevity instruction (instruction following)", +1, True),
    MetricSpec("plain_accuracy", "QA accuracy asked plainly (knowledge)", +1, True),
    MetricSpec("choice_accuracy", "QA 4-way multiple choice by log-likelihood (knowledge)", +1, True),
    MetricSpec("answer_log_likelihood", "gold answer log-likelihood per token (knowledge, nats)", +1, True),
    MetricSpec("text_log_likelihood", "Python-docs text log-likelihood per token (nats)", +1, True),
    MetricSpec("off_language_rate", "plain answers not in English (degeneration)", -1, True),
    MetricSpec("evasion_rate", "brevity answers that refuse or talk about the instruction (degeneration)", -1, True),
    MetricSpec("he_change", "mean |relative HE change| per tracked layer", -1),
    MetricSpec("he_change_max", "max |relative HE change| per tracked layer", -1),
    MetricSpec("orthogonality_error", "orthogonality error max|QᵀQ−I|", -1),
    MetricSpec("reward_margin", "reward margin, last step (train)", +1),
    MetricSpec("reward_accuracy", "reward accuracy, last step (train)", +1),
    MetricSpec("logps/chosen", "log p(chosen) on the training batches"),
    MetricSpec("logps/rejected", "log p(rejected) on the training batches"),
    MetricSpec("rewards/margins", "reward margin on the training batches", +1),
    MetricSpec("trainable_params", "trainable parameters"),
    MetricSpec("train_seconds", "training time (s)"),
)}


def metric(key: str) -> MetricSpec:
    """The catalogue entry named ``key``."""
    return CATALOGUE[key]
