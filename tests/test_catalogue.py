"""Every column of every table, summary and plot is a metric of the catalogue (``ropo.metrics.catalogue``)."""

import pytest

from ropo.metrics.catalogue import CATALOGUE, metric


def _columns() -> dict[str, list[str]]:
    from ropo.demo.run import CONTRACT_KEYS, EVAL_KEYS, SUMMARY_COLUMNS
    from ropo.evaluation.report import COLUMNS
    from ropo.frontier import summary
    from ropo.frontier.plots import FRONTIER_PLOTS
    from ropo.frontier.points import METRICS, TRAINING_METRICS

    return {
        "ropo eval report": [c.key for c in COLUMNS],
        "demo summary.md": [key for key, _, _ in SUMMARY_COLUMNS],
        "demo metrics.json": [*CONTRACT_KEYS, *EVAL_KEYS],
        # ``seed`` and ``step`` name the point (with its series), they are not measurements.
        "frontier summary.md": [key for key, _, _ in summary.COLUMNS if key not in ("seed", "step")],
        "frontier plots": [key for key, _ in FRONTIER_PLOTS],
        "frontier.json": [m.key for m in (*METRICS, *TRAINING_METRICS)],
    }


@pytest.mark.parametrize("table", list(_columns()))
def test_every_column_is_a_catalogue_metric(table):
    unknown = []
    for key in _columns()[table]:
        try:
            metric(key)
        except KeyError:
            unknown.append(key)
    assert unknown == [], table


def test_the_catalogue_declares_each_metric_once():
    assert all(key == m.key and m.direction in (-1, 0, 1) and m.label for key, m in CATALOGUE.items())
