"""How long ``ropo demo`` trains and how much it evaluates: ``--quick``, the default, ``--full``.

Sized for a 2-core CPU, where a training step of SmolLM2-135M-Instruct on four pairs of up to 256
tokens takes about 5–10 s and sampled answers about 1–2 s each: ``--quick`` (under 3 minutes) only
checks that the whole pipeline runs, the default (about 10 minutes) trains 12 steps, and ``--full``
one epoch of the 155 training pairs with every test prompt evaluated (measured times in the README).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoMode:
    max_steps: int
    batch_size: int
    max_length: int
    eval_prompts: int | None  # None: every test prompt
    samples_per_prompt: int
    max_new_tokens: int
    save_steps: int
    probe_items: int | None  # questions of the shipped QA probe (None: all 40)
    text_passages: int  # passages of held-out text scored (``ropo.evaluation.knowledge``)


MODES = {
    "quick": DemoMode(max_steps=2, batch_size=2, max_length=128, eval_prompts=4, samples_per_prompt=2, max_new_tokens=24, save_steps=1,
                      probe_items=8, text_passages=8),
    "default": DemoMode(max_steps=12, batch_size=4, max_length=160, eval_prompts=12, samples_per_prompt=2, max_new_tokens=64, save_steps=4,
                        probe_items=None, text_passages=64),
    "full": DemoMode(max_steps=40, batch_size=4, max_length=256, eval_prompts=None, samples_per_prompt=4, max_new_tokens=128, save_steps=10,
                     probe_items=None, text_passages=200),
}

#: The methods the demo compares, by the names its table shows (``dpo`` is plain DPO: the registry's
#: ``full``). Each trains at its registry's usual learning rate; the data, steps, batch, schedule and
#: β are the same for all.
METHODS = ("ropo", "dpo", "lora")
