"""Batched, seeded generation whose every setting is recorded, so runs are compared like for like.

Its own module, below both training (which samples answers while it trains) and evaluation: neither
package imports the other to generate.

Prompts are rendered with the tokenizer's chat template and left-padded by the tokenizer itself
(the convention for decoder-only ``generate``). Before batch k the torch RNG is seeded with
``seed + k``: the same prompts, settings and batch size give the same samples for every model.
An answer is finished when it reaches a stop token (``stop_token_ids``); everything that samples
answers (evaluation, the demo task's dataset build) goes through ``generate``, so "finished" means
one thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import BatchEncoding, GenerationConfig, PreTrainedTokenizerBase

from ropo.errors import RoPOError

Message = dict[str, str]


class GenerationError(RoPOError, ValueError):
    """A sampling setting out of range, or a tokenizer generation cannot stop or pad with."""


@dataclass(frozen=True)
class Prompt:
    """One conversation to answer: ``turns`` are the user's messages, answered one after the other."""

    id: int | str  # MT-Bench's question_id, else the row number (1-based)
    turns: tuple[str, ...]
    dataset: str  # AlpacaEval's ``dataset`` field, else the file's stem


@dataclass(frozen=True)
class SamplingSettings:
    """Everything that decides the samples; written next to the results."""

    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0  # 0 = no top-k cut
    repetition_penalty: float = 1.0  # pinned so a model's own generation_config cannot change it
    samples_per_prompt: int = 4  # > 1 for self-BLEU
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens": self.max_new_tokens >= 1,
            "temperature": self.temperature > 0,
            "top_p": 0 < self.top_p <= 1,
            "top_k": self.top_k >= 0,
            "repetition_penalty": self.repetition_penalty > 0,
            "samples_per_prompt": self.samples_per_prompt >= 1,
            "batch_size": self.batch_size >= 1,
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            raise GenerationError(f"sampling setting {bad[0]}={getattr(self, bad[0])!r} is out of range")
        if self.samples_per_prompt > 1 and not self.do_sample:
            raise GenerationError("samples_per_prompt > 1 needs do_sample=True (greedy samples are identical)")

    def generation_config(self, pad_token_id: int, stop_token_ids: list[int]) -> GenerationConfig:
        sampling = (
            {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k} if self.do_sample else {}
        )
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            repetition_penalty=self.repetition_penalty,
            pad_token_id=pad_token_id,
            eos_token_id=stop_token_ids,
            **sampling,
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    """One answer to one turn of one prompt."""

    prompt_id: int | str
    turn: int
    sample: int
    messages: list[Message]  # the conversation up to and including this turn's user message
    text: str
    num_tokens: int  # generated tokens before the stop token
    hit_limit: bool  # cut off at max_new_tokens without a stop token
    prompt_token_ids: list[int] = field(repr=False)
    token_ids: list[int] = field(repr=False)  # the generated ids, stop token included

    def conversation(self) -> list[Message]:
        return [*self.messages, {"role": "assistant", "content": self.text}]


def stop_token_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's EOS plus the ids the model's generation config stops on (chat models often
    end a turn with a token that is not the tokenizer's EOS)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
    ids = [tokenizer.eos_token_id, *configured]
    stops = sorted({i for i in ids if i is not None})
    if not stops:
        raise GenerationError(f"{type(tokenizer).__name__}: no EOS token; cannot tell where an answer ends")
    return stops


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id the tokenizer pads with (``ropo``'s ``load_tokenizer`` sets it to EOS where it is missing)."""
    if tokenizer.pad_token_id is None:
        raise GenerationError(
            f"{type(tokenizer).__name__}: no pad token to pad batches with; set tokenizer.pad_token "
            "(e.g. to tokenizer.eos_token)"
        )
    return tokenizer.pad_token_id


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[int]:
    """Token ids of ``messages`` followed by the start of the assistant's turn."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return tokenizer(text)["input_ids"]


def left_padded(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Sequence[int]]) -> BatchEncoding:
    """``input_ids`` and ``attention_mask`` tensors with every row right-aligned, padded by the tokenizer."""
    pad_token_id(tokenizer)
    return tokenizer.pad({"input_ids": [list(row) for row in rows]}, padding=True, padding_side="left", return_tensors="pt")


def _split_answer(new_ids: list[int], stops: set[int]) -> tuple[list[int], int, bool]:
    """(ids up to and including the stop token, tokens before it, cut off by the limit?)."""
    for position, token in enumerate(new_ids):
        if token in stops:
            return new_ids[: position + 1], position, False
    return new_ids, len(new_ids), True


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    settings: SamplingSettings,
    progress: bool = True,
    description: str = "generating",
) -> list[Generation]:
    """Answer every turn of every prompt ``settings.samples_per_prompt`` times.

    Turn t of a conversation is answered after its turn t−1, with the model's own earlier answers
    in the context (as MT-Bench does). Results are ordered by (turn, sample, prompt).
    """
    model.eval()
    pad, stops = pad_token_id(tokenizer), stop_token_ids(model, tokenizer)
    config = settings.generation_config(pad, stops)
    device = model_device(model)
    histories = {(p.id, s): [] for s in range(settings.samples_per_prompt) for p in prompts}
    total = settings.samples_per_prompt * sum(len(p.turns) for p in prompts)
    results: list[Generation] = []
    batch_index = 0
    with tqdm(total=total, desc=description, unit="answer", disable=not progress) as bar:
        for turn in range(max(len(p.turns) for p in prompts)):
            jobs = [
                (p, s, [*histories[p.id, s], {"role": "user", "content": p.turns[turn]}])
                for s in range(settings.samples_per_prompt)
                for p in prompts
                if turn < len(p.turns)
            ]
            for start in range(0, len(jobs), settings.batch_size):
                chunk = jobs[start : start + settings.batch_size]
                prompt_ids = [render_prompt(tokenizer, messages) for _, _, messages in chunk]
                inputs = left_padded(tokenizer, prompt_ids).to(device)
                torch.manual_seed(settings.seed + batch_index)
                batch_index += 1
                output = model.generate(**inputs, generation_config=config)
                for (prompt, sample, messages), ids, row in zip(chunk, prompt_ids, output[:, inputs["input_ids"].shape[1] :]):
                    kept, length, cut = _split_answer(row.tolist(), set(stops))
                    text = tokenizer.decode(kept[:length], skip_special_tokens=True).strip()
                    results.append(Generation(prompt.id, turn, sample, messages, text, length, cut, ids, kept))
                    histories[prompt.id, sample] = [*messages, {"role": "assistant", "content": text}]
                bar.update(len(chunk))
    return results
