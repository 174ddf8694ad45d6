"""The relearning attack restores a class that was only suppressed in the head, and not one the
model never learned."""

from __future__ import annotations

import copy

import torch
from torch import nn

from lightning_unlearn.functional import relearn

FORGOTTEN = 3


def _blobs(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    return torch.randn(n, 6, generator=g) + 3.0 * nn.functional.one_hot(y, 6).float(), y


def _train(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    """A 3-unit bottleneck MLP with weight decay: its hidden layer only keeps what its classes need."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 4))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def test_relearning_restores_a_head_suppressed_class_but_not_a_retrained_one():
    x, y = _blobs()
    keep = y != FORGOTTEN
    original, retrained = _train(x, y, 0), _train(x[keep], y[keep], 1)
    forget_x, forget_y = x[~keep], y[~keep]
    suppressed = copy.deepcopy(original)  # "unlearned" by pushing the class's logit down, features untouched
    with torch.no_grad():
        logits = suppressed(forget_x)
        gap = (logits[:, FORGOTTEN] - logits[:, :FORGOTTEN].max(1).values).max()
        suppressed[2].bias[FORGOTTEN] -= gap + 1.0
    assert _accuracy(original, forget_x, forget_y) > 0.9
    assert _accuracy(suppressed, forget_x, forget_y) == 0.0 and _accuracy(retrained, forget_x, forget_y) == 0.0
    attack = [(forget_x[:5], forget_y[:5])]  # the attacker relearns on five forgotten examples
    held_out_x, held_out_y = forget_x[5:], forget_y[5:]
    restored = relearn(suppressed, attack, steps=10, lr=0.01)
    control = relearn(retrained, attack, steps=10, lr=0.01)
    assert _accuracy(restored, held_out_x, held_out_y) > 0.9
    assert _accuracy(control, held_out_x, held_out_y) < 0.2
    assert _accuracy(suppressed, held_out_x, held_out_y) == 0.0  # the attacked models are copies
    assert not restored.training
