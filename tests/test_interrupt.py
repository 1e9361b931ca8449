"""Ctrl-C and SIGTERM during `ropo train` (issue 20): one line saying which checkpoint was kept and
the command that continues, no traceback. (That ``--resume`` continues from the last complete
checkpoint is tested in test_run_safety.py.)"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_what_was_kept_and_how_to_go_on(tmp_path, stop):
    run_dir = tmp_path / "run"
    args = ["configs/tiny.yaml", f"output_dir={run_dir}", "training.max_steps=400", "training.save_steps=2",
            "sample_every=0", "metrics_every=0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # Ctrl-C as in a terminal: a test suite started in the background (`make test &`, nohup) hands its
    # children SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all.
    process = subprocess.Popen([sys.executable, "-m", "ropo.cli", "train", *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not list((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None and time.time() < deadline, "the run ended before a checkpoint"
        time.sleep(0.2)
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "interrupted; " in last and "is the last complete checkpoint" in last
    assert last.endswith(f"continue with: ropo train {' '.join(args)} --resume")
