"""Quiet by default: ``import ropo`` prints nothing, and the CLI hides the third-party warnings
declared harmless in ``ropo/quiet.py`` (and only those)."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import trl

import ropo  # noqa: F401
from ropo.cli import main as ropo_main
from ropo.quiet import IMPORT_LOG_MESSAGES, filter_cli_warnings
from ropo.tiny_models import tiny_causal_lm

SRC = Path(__file__).resolve().parents[1] / "src"


def test_import_ropo_prints_nothing():
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", "import ropo"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def test_import_log_filters_drop_only_the_declared_messages(caplog):
    for name, prefix, _ in IMPORT_LOG_MESSAGES:
        logger = logging.getLogger(name)
        with caplog.at_level(logging.WARNING, logger=name):
            logger.warning(prefix + ": details")
            logger.warning("some other problem")
        assert [r.getMessage() for r in caplog.records if r.name == name] == ["some other problem"]
        caplog.clear()


def _warnings_of(run) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in caught]


def _training_calls(tmp_path):
    def run():
        trl.DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
        tiny_causal_lm().is_gradient_checkpointing  # what TRL reads on every step

    return run


def test_cli_filters_the_declared_training_warnings(tmp_path):
    unfiltered = _warnings_of(_training_calls(tmp_path))
    assert any("is_gradient_checkpointing" in m for m in unfiltered)  # the warnings are real here

    def filtered():
        filter_cli_warnings()
        _training_calls(tmp_path)()
        warnings.warn("a warning of ropo's own", UserWarning)

    assert _warnings_of(filtered) == ["a warning of ropo's own"]


def test_cli_restores_the_callers_warning_filters(capsys):
    before, shown = list(warnings.filters), warnings.showwarning
    assert ropo_main(["merge", "/nonexistent/adapter", "--base", "tiny:llama", "--out", "/nonexistent/out"]) != 0
    assert warnings.filters == before and warnings.showwarning is shown
