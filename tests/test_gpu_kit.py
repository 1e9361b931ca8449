"""The GPU kit (benchmarks/gpu/): its completeness check, its DPO check and its script, on the CPU.

The lent GPU machine is rare and short, so its one run must work the first time: everything the
run does is exercised here first, at toy sizes.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
KIT_DIR = REPO / "benchmarks" / "gpu"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", KIT_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


kit = _load("kit")


def _roots():
    return [("ropo", r) for r in kit.ropo_requirements()] + [
        ("run.sh", Requirement(f"{name}=={version}")) for name, version in kit.KIT.items()
    ]


def test_every_requirement_is_met_on_the_recorded_machine():
    """ropo's, peft's, trl's and datasets' requirements: in the kit or on the GPU machine."""
    result = kit.check_requirements(kit.recorded_packages(), _roots())
    assert not result.missing, result.missing
    met = {line.split(" ")[0] for line in result.from_kit}
    assert {"peft==0.21.2", "trl==1.16.0", "datasets==5.2.0"} <= met
    assert any(line.startswith("torch>=") for line in result.on_machine)


def test_the_check_names_what_is_missing_or_too_old():
    machine = kit.recorded_packages()
    del machine["pandas"]
    machine["accelerate"] = Version("0.9.0")
    missing = kit.check_requirements(machine, _roots()).missing
    assert any(line.startswith("pandas") and "not on the machine" in line for line in missing)
    assert any(line.startswith("accelerate") and "the machine has 0.9.0" in line for line in missing)


def test_the_lock_matches_the_kit_pins():
    lock = json.loads(kit.LOCK.read_text())
    assert {name: entry["version"] for name, entry in lock.items()} == kit.KIT


@pytest.mark.skipif(not kit.WHEELS.is_dir(), reason="wheels not downloaded (python benchmarks/gpu/kit.py download)")
def test_downloaded_wheels_install_without_an_index_and_import():
    assert kit.check_imports() == []


def test_dpo_check_runs_and_checks_on_the_cpu(tmp_path):
    """What the GPU run does with TRL's defaults, at 2 steps: ln 2 first, every check holding."""
    out = tmp_path / "dpo.json"
    result = subprocess.run([sys.executable, str(KIT_DIR / "dpo_check.py"), "--device", "cpu", "--steps", "2",
                             "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert all(report["checks"].values()) and len(report["bf16"]["losses"]) == 2


def test_run_script_end_to_end_at_toy_sizes(tmp_path):
    """KIT_SMOKE=1: every step of run.sh on the CPU; at most 8 files; the summary prints last."""
    env = {**os.environ, "KIT_SMOKE": "1", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(KIT_DIR / "run.sh"), str(tmp_path / "out")], capture_output=True,
                            text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) <= 8 and {"summary.md", "dpo.json", "bench.json", "environment.txt", "run.log"} <= set(files)
    rows = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {row["mode"] for row in rows} == {"train", "inference"}
    assert "every check holds" in result.stdout and "| ropo_merged |" in result.stdout
