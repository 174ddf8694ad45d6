"""Utilities over the user's network: find it inside a module, check it returns logits, run extra
passes without side effects (eval mode, buffers restored)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.pruning import eval_mode

__all__ = ["buffers_restored", "check_logits", "eval_mode", "network_of", "reinitialise"]


def network_of(module: nn.Module) -> nn.Module:
    """The classifier inside a module: ``module.model`` for our wrappers, else the module itself."""
    inner = getattr(module, "model", None)
    return inner if isinstance(inner, nn.Module) else module


@torch.no_grad()
def check_logits(model: nn.Module, x: Tensor, num_classes: int, name: str) -> int:
    """Checks that ``model`` maps a batch to ``(batch, classes)`` logits covering the labels, in eval
    mode (BatchNorm statistics untouched). Returns the number of logits.

    Sequence models pass too: logits ``(batch, classes, *positions)`` -- the layout
    ``F.cross_entropy`` takes for sequences, e.g. a causal language model's ``(batch, vocab,
    positions)`` (:class:`~lightning_unlearn.models.TinyCausalLM`).

    Raises:
        ValueError: the output is not a ``(batch, classes, ...)`` tensor, or has fewer than
            ``num_classes`` columns.
    """
    with eval_mode(model):
        out = model(x)
    if not isinstance(out, Tensor) or out.ndim < 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"`{name}` must return (batch, classes) logits; for a batch of {x.shape[0]} it returned {shape}."
            " Wrap the network so its forward returns the logits tensor."
        )
    if out.shape[1] < num_classes:
        raise ValueError(
            f"`{name}` returns {out.shape[1]} logits but the data has {num_classes} classes: use a network with"
            f" {num_classes} outputs."
        )
    return int(out.shape[1])


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


def reinitialise(model: nn.Module, seed: Optional[int] = None) -> nn.Module:
    """Resets every submodule that has ``reset_parameters`` (conv, linear, norm layers), in place."""
    state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    return model
