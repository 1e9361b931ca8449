"""Result rows: ratios to LoRA and to the floor, a markdown table, the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from ropo.io import atomic_write_text

MIB = 1024 * 1024


def add_ratios(rows: list[dict]) -> list[dict]:
    """``ratio_to_lora`` and ``ratio_to_floor`` within each (model, targets, mode) group, when measured."""
    def key(row: dict) -> tuple:
        return row["model"], row["targets"], row.get("mode", "train")

    for row in rows:
        group = [r for r in rows if key(r) == key(row)]
        for reference in ("lora", "floor"):
            match = [r["ms_per_step"] for r in group if r["method"] == reference]
            row[f"ratio_to_{reference}"] = row["ms_per_step"] / match[0] if match else None
    return rows


def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def table(rows: list[dict]) -> str:
    """A markdown table of the rows (memory in MiB, ratios to LoRA and to the floor).

    "peak" includes the model's weights; "step" is what the steps add on top of the loaded model.
    """
    header = (
        "| model | targets | mode | method | ms/step | × LoRA | × floor | peak MiB | step MiB | trainable |\n"
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for row in rows:
        peak, train = row.get("peak_memory_bytes"), row.get("train_memory_bytes")
        lines.append(
            f"| {row['model']} | {row['targets']} | {row.get('mode', 'train')} | {row['method']} | {row['ms_per_step']:.1f} "
            f"| {_cell(row['ratio_to_lora'], '.3f')} | {_cell(row['ratio_to_floor'], '.3f')} "
            f"| {_cell(peak and peak / MIB, '.0f')} | {_cell(train and train / MIB, '.0f')} "
            f"| {row['trainable_params']:,} |"
        )
    return "\n".join(lines)


def write_json(path: str | Path, rows: list[dict]) -> Path:
    """The rows as a JSON list, written atomically."""
    return atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
