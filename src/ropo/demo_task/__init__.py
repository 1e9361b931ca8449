"""The built-in preference task: prompts written for this project, a programmatic judge, and the
(chosen, rejected) dataset built from a base model's own answers. See README.md in this folder."""

from ropo.demo_task.build import BuildSettings, build_dataset, pair_stats, split_prompts, write_dataset
from ropo.demo_task.dataset import held_out_records, preference_dataset, split_records
from ropo.demo_task.judge import preference, score, score_details
from ropo.demo_task.records import PROMPTS_FILE, SHIPPED_DATA_DIR, TaskDataError, load_prompts

__all__ = [
    "PROMPTS_FILE",
    "SHIPPED_DATA_DIR",
    "BuildSettings",
    "TaskDataError",
    "build_dataset",
    "load_prompts",
    "pair_stats",
    "preference",
    "preference_dataset",
    "score",
    "score_details",
    "split_prompts",
    "held_out_records",
    "split_records",
    "write_dataset",
]
