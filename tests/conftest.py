import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


@pytest.fixture
def token_ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(123)
    return torch.randint(0, 128, (2, 11), generator=generator)


def train_steps(model: torch.nn.Module, token_ids: torch.Tensor, steps: int = 5, lr: float = 0.05) -> None:
    """A few optimizer steps of next-token loss: enough to move every adapter parameter."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for _ in range(steps):
        model(input_ids=token_ids, labels=token_ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def saved_activations(run, x: torch.Tensor) -> list[torch.Tensor]:
    """Tensors autograd saves while ``run()`` builds its graph that are at least as large as
    ``x``; ``run`` returns the output, whose sum is then backpropagated."""
    saved = []

    def pack(tensor):
        if tensor.numel() >= x.numel():
            saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run().sum().backward()
    return saved
