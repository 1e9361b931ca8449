"""The kit run's summary: the checks and the step-time table, from the files in its output folder.

    python benchmarks/gpu/summarize.py OUT_DIR      (run.sh prints this last)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ropo.bench.report import table

BENCH_FILES = ("bench-train-1b.json", "bench-train-8b.json", "bench-inference.json")


def summary(folder: Path) -> str:
    lines = [f"# GPU kit run: {folder}"]
    dpo_file = folder / "dpo.json"
    if dpo_file.exists():
        dpo = json.loads(dpo_file.read_text())
        failed = [name for name, ok in dpo["checks"].items() if not ok]
        lines.append(f"DPO (TRL defaults, {dpo['steps']} steps, {dpo['gpu']}): "
                     + ("every check holds" if not failed else "FAILED: " + "; ".join(failed)))
        for name in ("bf16", "fp32"):
            run = dpo[name]
            lines.append(f"  {name}: losses {run['losses'][0]:.5f} -> {run['losses'][-1]:.4f}, orthogonality error "
                         f"{run['orthogonality_error']:.1e}, max HE change {run['he_change_max']:.1e}")
    else:
        lines.append("DPO: no result")
    rows = []
    for name in BENCH_FILES:
        path = folder / name
        if path.exists():
            rows += json.loads(path.read_text())
        else:
            lines.append(f"{name}: no result")
    if rows:
        lines += ["", table(rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1])))
