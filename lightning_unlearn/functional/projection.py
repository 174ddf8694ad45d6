"""Unilateral gradient surgery (EUPMU, Zhou et al., NeurIPS 2025, Proposition 3.2) on lists of
tensors, with fused ``torch._foreach_*`` reductions and no flattened copies.

Pure torch, usable in any training loop::

    retain = torch.autograd.grad(retain_loss, params)
    project_gradients([p.grad for p in params], retain, tolerance=0.0)   # in place on .grad
    optimizer.step()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_unlearn.functional.masks import Scope, check_scope
from lightning_unlearn.validation import check_float

__all__ = ["check_tolerance", "foreach_dot", "foreach_sq_norm", "project_gradients"]


def foreach_dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Per-tensor inner products ``<a_i, b_i>`` as an ``(n,)`` float32 tensor.

    Fused, with no flattened copy: the products ``a_i * b_i`` (one temporary per tensor) are
    reduced with ``torch._foreach_norm``, which has no signed sum, through
    ``sum(p) = 2 * sum(max(p, 0)) - sum(|p|)``: two L1 norms, accumulated in float32, whose
    rounding error is that of a plain sum of the products.
    """
    products = torch._foreach_mul(list(a), list(b))
    absolute = torch._foreach_norm(products, 1, dtype=torch.float32)
    torch._foreach_clamp_min_(products, 0.0)
    positive = torch._foreach_norm(products, 1, dtype=torch.float32)
    return 2.0 * _stack(positive) - _stack(absolute)


def foreach_sq_norm(a: Sequence[Tensor]) -> Tensor:
    """Per-tensor squared L2 norms ``||a_i||^2`` as an ``(n,)`` float32 tensor (one fused reduction)."""
    return _stack(torch._foreach_norm(list(a), 2, dtype=torch.float32)).square()


def _stack(scalars: Sequence[Tensor]) -> Tensor:
    device = scalars[0].device
    return torch.stack([s.to(device) for s in scalars])


def check_tolerance(tolerance: Any) -> float:
    """Returns ``tolerance`` as a float >= 0; raises a ValueError naming the fix otherwise."""
    return check_float(
        tolerance,
        "tolerance",
        minimum=0.0,
        hint="it is eps, the allowed first-order retain-loss increase per step (lr * eps); use 0.0 to forbid any increase.",
    )


@torch.no_grad()
def project_gradients(
    grads: Sequence[Tensor], reference: Sequence[Tensor], tolerance: float = 0.0, scope: Scope = "global"
) -> Tensor:
    """Unilateral gradient surgery (EUPMU, Proposition 3.2), in place on ``grads``.

    With ``g_f = grads`` (the unlearning gradient) and ``g_r = reference`` (the retain-loss
    gradient), solves ``min ||d - g_f||^2  s.t.  <g_r, d> >= -tolerance``:

    ``lambda* = (-<g_r, g_f> - tolerance) / (||g_r||^2 + 1e-8)``;
    ``d = g_f + lambda* g_r`` if ``lambda* > 0``, else ``d = g_f`` (untouched).

    So a step ``theta -= lr * d`` changes the retain loss by ``-lr <g_r, d> <= lr * tolerance`` to
    first order. ``scope="global"`` treats all tensors as one vector (one ``lambda*``);
    ``scope="layer"`` applies the rule to each tensor separately (one ``lambda*`` per tensor, each
    with the same ``tolerance``; the total first-order bound is then ``lr * tolerance * n``).
    ``reference`` is not modified; a non-finite ``lambda*`` leaves ``grads`` untouched.

    Args:
        grads: the gradients to correct (``g_f``), one tensor per parameter.
        reference: the retain gradients (``g_r``), same shapes and devices.
        tolerance: the allowed first-order retain-loss increase per unit learning rate (``eps``).
        scope: ``"global"`` or ``"layer"``.

    Returns:
        ``lambda*`` before clamping: a 0-dim tensor (global) or one value per tensor (layer).
        The applied multiplier is ``lambda*.clamp_min(0)``.

    Raises:
        ValueError: ``tolerance < 0``, unknown ``scope`` or lists of different lengths.

    Example::

        >>> g_f, g_r = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
        >>> project_gradients(g_f, g_r)
        tensor(0.5000)
        >>> g_f[0]  # now orthogonal to g_r
        tensor([0.5000, 0.5000])
    """
    check_tolerance(tolerance)
    check_scope(scope)
    grads, reference = list(grads), list(reference)
    if len(grads) != len(reference):
        raise ValueError(f"Got {len(grads)} gradients and {len(reference)} reference gradients: they must pair up.")
    if not grads:
        return torch.zeros(())
    dots, sq_norms = foreach_dot(reference, grads), foreach_sq_norm(reference)
    if scope == "global":
        dots, sq_norms = dots.sum(), sq_norms.sum()
    lambda_star = (-dots - tolerance) / (sq_norms + 1e-8)
    applied = torch.where(lambda_star.isfinite(), lambda_star.clamp_min(0.0), 0.0)
    scales = applied.expand(len(grads)) if scope == "global" else applied
    torch._foreach_addcmul_(grads, reference, [s.to(g.device, g.dtype) for s, g in zip(scales.unbind(), grads)])
    return lambda_star
