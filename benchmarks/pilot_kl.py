"""KL to the base of a study run's checkpoints, on the study's held-out prompts: how a method's
learning-rate factor is chosen before the study (``ropo.frontier.plan``'s rule: its checkpoints
reach the over-optimised regime and its KL range overlaps the other methods'). Only KL is measured,
so the factor is set without seeing any quality or retention number.

    python benchmarks/pilot_kl.py RUN_DIR METHOD [STEP ...]   (prints one JSON line per checkpoint)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from statistics import fmean

from ropo.adapter import merged_for_inference
from ropo.evaluation.drift import Reference, generation_kl
from ropo.frontier.plan import build_plan
from ropo.frontier.study import study_evaluation
from ropo.generation import generate
from ropo.models.loading import load_tokenizer
from ropo.models.runs import load_trained


def main(run_dir: str, method: str, steps: list[int]) -> None:
    plan = build_plan(methods=["ropo-2025"], seeds=(0,))
    evaluation = study_evaluation(plan)
    tokenizer = load_tokenizer(plan.model)
    for step in steps:
        started = time.perf_counter()
        model = load_trained(method, Path(run_dir) / "checkpoints" / f"checkpoint-{step}", plan.model, "float32", 0).eval()
        with merged_for_inference(model):
            generations = generate(model, tokenizer, evaluation.prompts, evaluation.sampling, progress=False)
        kl = generation_kl(model, Reference(model, None), generations, evaluation.sampling.batch_size)
        print(json.dumps({"run": run_dir, "step": step, "kl": fmean(kl), "seconds": round(time.perf_counter() - started, 1)}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]] or [12, 60])
