"""``train_or_reuse``: the policy of the drivers that train many runs (the demo, the frontier).

A finished run is reused when its recipe is the same (and refused when it is not); an interrupted
run resumes from its last complete checkpoint; one that never checkpointed starts again.
"""

from __future__ import annotations

from pathlib import Path

from ropo.models.runs import final_weights_dir
from ropo.training.recipe import RecipeError
from ropo.training.run import is_run, last_complete_checkpoint, recipe_differences, train
from ropo.training.spec import RunSpec


def has_complete_checkpoint(run_dir: Path) -> bool:
    try:
        last_complete_checkpoint(run_dir)
    except RecipeError:
        return False
    return True


def train_or_reuse(spec: RunSpec, name: str, command: str) -> bool:
    """Train ``spec`` into its ``output_dir`` unless a run finished there; an interrupted run resumes
    from its last complete checkpoint. True if it trained now, False if the finished run was reused.

    A finished run made with other settings is never reused: that is an error naming them.
    """
    run_dir = Path(spec.recipe.output_dir)
    if final_weights_dir(run_dir, spec.method.name).is_dir():
        changed = recipe_differences(run_dir, spec.recipe)
        if changed:
            raise RecipeError(f"{run_dir} was trained with other settings (in {changed}): choose another --out or delete it")
        print(f"[{command}] {name}: already trained in {run_dir}")
        return False
    resume = has_complete_checkpoint(run_dir)
    restart = not resume and is_run(run_dir)  # started but never checkpointed: only its own files go
    print(f"[{command}] training {name} ({'resuming' if resume else 'from the start'})")
    train(spec, resume=resume, restart=restart)
    return True
