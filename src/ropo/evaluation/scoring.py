"""Log-probabilities of given continuations under a causal LM, a batch at a time."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ropo.generation import model_device

#: (context ids, continuation ids): the continuation's tokens are scored given everything before them.
Pair = tuple[Sequence[int], Sequence[int]]


@torch.inference_mode()
def continuation_log_probs(model: nn.Module, pairs: Sequence[Pair]) -> list[torch.Tensor]:
    """For each pair, log-softmax over the vocabulary at each continuation token: (len(cont), V), fp32.

    One forward pass over the right-padded batch; padding sits after every real token, so causal
    attention keeps it out of the scored positions and its id does not matter: torch pads with 0
    here, as the callers hold token ids but no tokenizer.
    """
    if any(not context or not continuation for context, continuation in pairs):
        raise ValueError("continuation_log_probs needs a non-empty context and continuation in every pair")
    rows = [torch.tensor([*context, *continuation], dtype=torch.long) for context, continuation in pairs]
    ids = pad_sequence(rows, batch_first=True, padding_side="right")
    mask = pad_sequence([torch.ones_like(row) for row in rows], batch_first=True, padding_side="right")
    device = model_device(model)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    scored = []
    for i, (context, continuation) in enumerate(pairs):
        start = len(context) - 1  # logits at position t predict token t + 1
        scored.append(torch.log_softmax(logits[i, start : start + len(continuation)].float(), dim=-1))
    return scored


def continuation_log_likelihoods(model: nn.Module, pairs: Sequence[Pair], batch_size: int = 8) -> list[float]:
    """Σ_t log p(continuation_t | context, continuation_<t) for each pair."""
    totals = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        for (_, continuation), log_probs in zip(chunk, continuation_log_probs(model, chunk)):
            index = torch.tensor(list(continuation), device=log_probs.device).unsqueeze(-1)
            totals.append(float(log_probs.gather(-1, index).sum()))
    return totals
