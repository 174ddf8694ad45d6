"""Utilities over the user's network: find it inside a module, check it returns logits, run extra
passes without side effects (eval mode, buffers restored)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional, TypeVar

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.pruning import PRUNE_SUFFIX, eval_mode

__all__ = ["buffers_restored", "check_logits", "copy_network", "eval_mode", "network_of", "reinitialise", "sample_like"]

M = TypeVar("M", bound=nn.Module)


def network_of(module: nn.Module) -> nn.Module:
    """The classifier inside a module: ``module.model`` for our wrappers, else the module itself."""
    inner = getattr(module, "model", None)
    return inner if isinstance(inner, nn.Module) else module


def sample_like(model: nn.Module, x: Tensor) -> Tensor:
    """``x`` on the device of ``model``'s first parameter and, when floating, in its dtype (a
    network held in bfloat16 gets bfloat16 inputs): for checks that run before Lightning's
    precision plugin has converted anything."""
    param = next(model.parameters(), None)
    if param is None:
        return x
    return x.to(device=param.device, dtype=param.dtype if x.is_floating_point() and param.is_floating_point() else x.dtype)


@torch.no_grad()
def check_logits(model: nn.Module, x: Tensor, num_classes: int, name: str) -> int:
    """Checks that ``model`` maps a batch to finite ``(batch, classes)`` logits covering the labels,
    in eval mode (BatchNorm statistics untouched). Returns the number of logits.

    ``x`` is fed as it is: pass it in the dtype of the model's weights (see
    :func:`lightning_unlearn.data.access.convert_input` under ``precision="bf16-true"``).

    Sequence models pass too: logits ``(batch, classes, *positions)`` -- the layout
    ``F.cross_entropy`` takes for sequences, e.g. a causal language model's ``(batch, vocab,
    positions)`` (:class:`~lightning_unlearn.models.TinyCausalLM`).

    Raises:
        ValueError: the output is not a ``(batch, classes, ...)`` tensor, has fewer than
            ``num_classes`` columns, or holds NaN or inf (naming ``name``).
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
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"`{name}` returns non-finite logits (NaN or inf) for a batch of {x.shape[0]} training examples, before any"
            " training: its weights hold NaN/inf or its forward overflows. Load its trained weights again (check"
            " `all(p.isfinite().all() for p in net.parameters())`)."
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
    saved = list(torch._foreach_clone(buffers)) if buffers else []
    try:
        yield
    finally:
        if buffers:
            with torch.no_grad():
                torch._foreach_copy_(buffers, saved)


def _reparametrised(module: nn.Module) -> list[tuple[str, nn.Parameter, Tensor]]:
    """``(name, name_orig parameter, name_mask buffer)`` of every ``torch.nn.utils.prune``
    reparametrisation held directly by ``module`` (``weight = weight_orig * weight_mask``)."""
    out = []
    for key, param in module.named_parameters(recurse=False):
        if not key.endswith(PRUNE_SUFFIX):
            continue
        name = key[: -len(PRUNE_SUFFIX)]
        mask = getattr(module, name + "_mask", None)
        if isinstance(mask, Tensor):
            out.append((name, param, mask))
    return out


def copy_network(model: M) -> M:
    """A deep copy of ``model`` that also works when parameters are reparametrised by
    ``torch.nn.utils.prune`` (e.g. Lightning's ``ModelPruning``) or other forward pre-hooks.

    Such a module holds its effective weight as a plain attribute computed from a parameter
    (``weight = weight_orig * weight_mask``, a non-leaf tensor), which ``copy.deepcopy`` refuses
    ("Only Tensors created explicitly by the user (graph leaves) support the deepcopy protocol").
    The copy gets those derived tensors recomputed from its own parameters and buffers (so they
    stay linked to the copy's ``weight_orig``, as ``torch.nn.utils.prune`` links them), any other
    derived tensor a detached copy (its hook recomputes it at the next forward). The original is
    not modified; a network without such tensors is copied exactly like ``copy.deepcopy``.

    Example::

        >>> from torch.nn.utils import prune
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> _ = prune.l1_unstructured(net[0], "weight", amount=0.5)
        >>> twin = copy_network(net)
        >>> torch.equal(twin[0].weight, net[0].weight), twin[0].weight_orig is net[0].weight_orig
        (True, False)
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
    twin = copy.deepcopy(model, memo)
    for module in twin.modules():
        for name, param, mask in _reparametrised(module):
            setattr(module, name, param * mask)
    return twin


def reinitialise(model: nn.Module, seed: Optional[int] = None) -> nn.Module:
    """Resets every submodule that has ``reset_parameters`` (conv, linear, norm layers) and
    ``reset_running_stats`` (norm layers), in place, drawing from ``seed`` when given (the global
    RNG is left as it was).

    A parameter reparametrised by ``torch.nn.utils.prune`` is re-initialised too: ``reset_parameters``
    writes the derived ``weight``, so its fresh values are copied into ``weight_orig`` and
    ``weight = weight_orig * weight_mask`` recomputed; the mask is kept (it is the topology, part
    of the architecture), and the values drawn are those a plain network of the same shapes
    gets from the same seed.
    """
    state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # type: ignore[operator]
                with torch.no_grad():
                    for name, param, _mask in _reparametrised(module):
                        fresh = vars(module).get(name)
                        if isinstance(fresh, Tensor) and fresh.shape == param.shape:
                            param.copy_(fresh)
                for name, param, mask in _reparametrised(module):
                    setattr(module, name, param * mask)
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()  # type: ignore[operator]
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    return model
