"""One point of a frontier: its cache key, its metric columns and its training-side symptoms.

The point itself is measured by the measurement core (``ropo.evaluation.measure``). Why a point
keeps its items: the study compares methods on the same prompts and probe items, paired
(``ropo.frontier.comparisons``), and a paired interval needs each item's value, not only the mean.
A cached point therefore holds what the model produced per item (``items``: each answer with its
judge score and KL, each probe item's knowledge measures, each text passage's log-likelihood); its
metrics and their intervals are computed from the items when the study is assembled (``summarize``),
all from one set of bootstrap draws (``ropo.evaluation.replicates``).

Every answer is paired with the base's answer to the same (prompt, turn, sample): the win rates are
pairwise judgements against the base. Intervals are 95 % percentile-bootstrap intervals over prompts
(probe items, text passages for those metrics).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from ropo.evaluation.replicates import REPLICATED_METRICS
from ropo.metrics.catalogue import CATALOGUE

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


def settings_key(settings: dict[str, Any]) -> str:
    """A point's cache key: the hash of everything that decided it."""
    return hashlib.sha256(json.dumps({"format": POINT_FORMAT, **settings}, sort_keys=True).encode()).hexdigest()


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
