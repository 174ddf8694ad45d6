"""Side-effect-free extra forward passes: buffers (BatchNorm running statistics) are put back."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def buffers_restored(module: nn.Module) -> Iterator[None]:
    """Runs the body, then puts every buffer of ``module`` back to its value on entry.

    For the extra forward passes of a method or callback (a retain reference gradient, a
    post-step loss measurement): the pass keeps the module's mode, so a network in train mode
    still normalises with batch statistics (the loss and gradient are those of a training
    step), but BatchNorm's running mean/variance and ``num_batches_tracked`` are not updated a
    second time for the same optimiser step. Costs one copy of the buffers (a few KB for
    BatchNorm networks).

    Example::

        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
        >>> before = net[1].running_mean.clone()
        >>> with buffers_restored(net):
        ...     _ = net(torch.randn(8, 3))
        >>> torch.equal(net[1].running_mean, before)
        True
    """
    buffers = list(module.buffers())
    saved = torch._foreach_clone(buffers) if buffers else []
    try:
        yield
    finally:
        if buffers:
            with torch.no_grad():
                torch._foreach_copy_(buffers, saved)
