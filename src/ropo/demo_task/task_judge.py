"""The task's judge behind ``ropo eval``'s judge interface (``--judge ropo.demo_task.task_judge:TaskJudge``):
each conversation's last user message is looked up among the task's prompts and its answer scored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ropo.demo_task import judge
from ropo.demo_task.records import TaskDataError, load_prompts
from ropo.evaluation.judges import Conversation, PointwiseJudge


class TaskJudge(PointwiseJudge):
    """Scores answers to the demo task's prompts with ``ropo.demo_task.judge.score``."""

    name = "demo_task"

    def __init__(self, prompts_path: str | Path | None = None) -> None:
        self.records = {record["prompt"]: record for record in load_prompts(prompts_path)}

    def score(self, conversations: Sequence[Conversation]) -> list[float]:
        scores = []
        for number, conversation in enumerate(conversations, start=1):
            prompt = next((m["content"] for m in reversed(conversation) if m.get("role") == "user"), None)
            if prompt not in self.records:
                raise TaskDataError(f"conversation {number}: its user message is not a demo-task prompt: {prompt!r:.80}")
            scores.append(judge.score(self.records[prompt], conversation[-1]["content"]))
        return scores
