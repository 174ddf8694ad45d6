"""Keeping earlier requests forgotten: distillation toward the previous step's outputs.

Pure torch (no Lightning), the core of :class:`~lightning_unlearn.callbacks.KeepForgotten`::

    targets = teacher_probabilities(previous_model, earlier_forget_loader)      # once per step
    grads = consolidation_gradients(model, params, x_earlier, targets[idx], weight=1.0)
    torch._foreach_add_([p.grad for p in params], grads)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter

from lightning_unlearn.validation import check_float

__all__ = ["consolidation_gradients", "consolidation_loss", "teacher_probabilities"]


def consolidation_loss(logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * mean_i KL(target_i || softmax(logits_i / T))`` (nats), the distillation term.

    Args:
        logits: ``(N, C)`` student logits (gradients flow).
        target_probs: ``(N, C)`` the previous step's probabilities (``softmax(z_prev / T)``).
        temperature: softmax temperature ``T > 0``.

    Example::

        >>> import torch
        >>> p = torch.tensor([[0.5, 0.5]])
        >>> float(consolidation_loss(torch.zeros(1, 2), p))
        0.0
    """
    log_q = F.log_softmax(logits.float() / temperature, dim=1)
    return F.kl_div(log_q, target_probs.float(), reduction="batchmean") * temperature**2


@torch.no_grad()
def teacher_probabilities(
    model: nn.Module, batches: Iterable, temperature: float = 1.0, device: Optional[torch.device] = None
) -> Tensor:
    """``softmax(model(x) / T)`` over every batch, in order, in eval mode (mode restored): the
    targets that keep the earlier forget sets where the previous step left them.

    Returns:
        ``(N, C)`` float32 probabilities on ``device`` (default: the model's).
    """
    temperature = check_float(temperature, "temperature", minimum=0.0, open_minimum=True, hint="e.g. 1.0")
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [F.softmax(model(batch[0].to(device)).float() / temperature, dim=1) for batch in batches]
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("teacher_probabilities got no batch: the earlier forget sets are empty.")
    return torch.cat(out)


def consolidation_gradients(
    model: nn.Module,
    params: Sequence[Parameter],
    x: Tensor,
    target_probs: Tensor,
    weight: float = 1.0,
    temperature: float = 1.0,
) -> list[Optional[Tensor]]:
    """Gradients of ``weight * consolidation_loss(model(x), target_probs, T)`` w.r.t. ``params``
    (``None`` for unused ones), without touching ``.grad``; the model keeps its mode."""
    with torch.enable_grad():
        loss = weight * consolidation_loss(model(x), target_probs, temperature)
        return list(torch.autograd.grad(loss, list(params), allow_unused=True))
