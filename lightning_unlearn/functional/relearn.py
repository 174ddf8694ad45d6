"""The relearning attack: fine-tune a copy of a model for a few steps on a little data and see
whether "forgotten" knowledge comes back (after Golatkar et al.'s relearn time, SCRUB's
readout, and the relearning attacks on unlearned LLMs). A model that only suppressed its head
relearns the forget set in a few steps; a model retrained without it needs about as long as
learning new data.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["relearn"]


def relearn(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    steps: int,
    *,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> nn.Module:
    """A deep copy of ``model`` fine-tuned with SGD and cross-entropy for ``steps`` steps, cycling
    through ``batches`` (``(x, y)`` on the model's device), in train mode (BatchNorm statistics
    update, as an attacker's fine-tuning would); the copy is returned in eval mode. ``model``
    itself is untouched.

    Args:
        model: the network to attack.
        batches: the attacker's data, e.g. a few forget examples (or retain batches each with a
            few forget examples).
        steps: optimiser steps (>= 0).
        lr, momentum, weight_decay: SGD settings (SCRUB's readout: lr 0.01).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> data = [(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))]
        >>> attacked = relearn(net, data, steps=20, lr=0.5)
        >>> bool(attacked(data[0][0]).argmax() == 1), attacked is not net
        (True, True)
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"`steps` must be an integer >= 0, got {steps!r}.")
    if not batches:
        raise ValueError("`batches` is empty: the relearning attack needs at least one (x, y) batch.")
    attacked = copy.deepcopy(model)
    attacked.train()
    params = [p for p in attacked.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    stream: Iterable = itertools.cycle(batches)
    with torch.enable_grad():
        for _, (x, y) in zip(range(steps), stream):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(attacked(x).float(), y)
            loss.backward()
            optimizer.step()
    return attacked.eval()
