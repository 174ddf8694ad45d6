"""Per-sample gradients, vectorised with ``torch.func`` (Fisher forgetting, influence unlearning)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lightning_unlearn.validation import check_int

__all__ = ["check_chunk_size", "per_sample_gradients"]


def per_sample_gradients(
    model: nn.Module,
    loss: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    chunk_size: Optional[int] = None,
) -> dict[str, Tensor]:
    """Per-sample gradients of ``loss(logits_i, y_i)`` w.r.t. the trainable parameters, vectorised
    with ``torch.func`` (``vmap(grad(...))`` over the batch, no per-sample Python loop).

    The model is called functionally on one sample at a time (under ``vmap``), so it must be in
    eval mode when it has BatchNorm (batch statistics of one sample are undefined). It runs in the
    dtype of the weights with autocast off (under mixed precision the per-sample gradients are
    float32; ``vmap``'s batch norm cannot mix a bfloat16 input with float32 statistics).

    Args:
        model: the network; its trainable parameters and buffers are read, not modified.
        loss: ``(logits of shape (1, C), target of shape (1,)) -> scalar``.
        x: inputs, shape ``(B, ...)``.
        y: targets, shape ``(B, ...)``.
        chunk_size: samples per vectorised chunk (``None``: the whole batch at once); bounds the
            peak memory at ``chunk_size x #params`` floats.

    Returns:
        ``{parameter name: gradients of shape (B, *parameter.shape)}``.
    """
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return loss(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

    dtype = next(iter(params.values())).dtype if params else x.dtype
    if x.is_floating_point():
        x = x.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        return vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk_size)(params, x, y)


def check_chunk_size(chunk_size: Optional[int]) -> None:
    """Raises a ValueError for a ``chunk_size`` that is neither ``None`` nor a positive integer."""
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", minimum=1, hint="None (whole batch) or a positive integer")
