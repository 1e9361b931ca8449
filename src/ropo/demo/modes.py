"""How long ``ropo demo`` trains and how much it evaluates: ``--quick``, the default, ``--full``.

Chosen so that on a 2-core CPU with SmolLM2-135M-Instruct the quick demo takes a few minutes and
the default about a quarter of an hour; ``--full`` trains longer and evaluates every test prompt.
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


MODES = {
    "quick": DemoMode(max_steps=4, batch_size=4, max_length=192, eval_prompts=6, samples_per_prompt=2, max_new_tokens=32, save_steps=2),
    "default": DemoMode(max_steps=30, batch_size=8, max_length=256, eval_prompts=24, samples_per_prompt=2, max_new_tokens=96, save_steps=10),
    "full": DemoMode(max_steps=120, batch_size=8, max_length=256, eval_prompts=None, samples_per_prompt=4, max_new_tokens=128, save_steps=20),
}

#: The demo's methods and how ``ropo train`` calls them (``dpo`` is plain DPO: full fine-tuning).
METHODS = {"ropo": "ropo", "dpo": "full", "lora": "lora"}

#: Each method at its usual learning rate (adapters learn at larger rates than full fine-tuning);
#: the data, steps, batch, schedule and β are the same for all.
LEARNING_RATES = {"ropo": 2e-3, "full": 5e-6, "lora": 5e-4}
