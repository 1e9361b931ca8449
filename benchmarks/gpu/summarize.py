"""The kit run's summary: the checks and the step-time table, from the files in its output folder.

    python benchmarks/gpu/summarize.py OUT_DIR      (run.sh prints this last)

It also gathers the bench steps' row files into one ``bench.json`` (the device machine sends back
at most 8 files).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ropo.bench.report import table

BENCH_FILES = ("bench-train-a.json", "bench-train-b.json", "bench-inference.json")
BENCH_ROWS = "bench.json"


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
        (folder / BENCH_ROWS).write_text(json.dumps(rows, indent=1) + "\n")
        for name in BENCH_FILES:
            (folder / name).unlink(missing_ok=True)
    kernels = folder / "kernels.json"
    if kernels.exists():
        lines += ["", "| width | kernels | rows | warps | fwd passes | fwd+bwd passes | fwd+bwd ms |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for r in json.loads(kernels.read_text())["rows"]:
            lines.append(f"| {r['width']} | {r['kernels']} | {r['rows_per_program'] or ''} | {r['warps'] or ''} "
                         f"| {r['forward_passes']:.1f} | {r['forward_backward_passes']:.1f} | {r['forward_backward_ms']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1])))
