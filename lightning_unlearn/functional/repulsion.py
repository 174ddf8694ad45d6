"""Parameter-space repulsion (Adapt-then-Unlearn, Tiwary, Guha, Panda & Prathosh, TMLR 2025).

Adapt-then-Unlearn unlearns a GAN in two stages: adapt a copy on the unwanted (negative) data to
``theta_N``, then train the original on the wanted data with a *repulsion* term that pushes the
parameters away from ``theta_N``. With ``d = ||theta - theta_N||^2`` the paper's three forms
(reference repo atriguha/Adapt_Unlearn, ``train_different_losses.py``: ``--loss_type l2 | exp | reci``):

* ``"negative_l2"`` (NL2): ``L_rep = -gamma * d``;
* ``"exponential_l2"`` (EL2): ``L_rep = exp(-gamma * d)``;
* ``"inverse_l2"`` (IL2): ``L_rep = 1 / (gamma * d)``.

The total objective is ``L_task + weight * L_rep``. Pure torch (no Lightning), with fused
``torch._foreach_*`` arithmetic; the gradient is analytic (no autograd graph):
``dL_rep/dtheta = L_rep'(d) * 2 (theta - theta_N)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Optional

import torch
from torch import Tensor

from lightning_unlearn.validation import check_choice, check_float

__all__ = ["REPULSION_FORMS", "RepulsionForm", "add_repulsion_gradient", "repulsion_loss", "repulsion_term", "squared_distance"]

RepulsionForm = Literal["negative_l2", "exponential_l2", "inverse_l2"]
REPULSION_FORMS = ("negative_l2", "exponential_l2", "inverse_l2")
#: ``d`` is clamped below at this value in the inverse form (``1 / d`` at the anchor itself).
MIN_DISTANCE = 1e-12


def squared_distance(params: Sequence[Tensor], anchors: Sequence[Tensor]) -> Tensor:
    """``d = sum_t ||theta_t - a_t||^2`` over the tensors (float32 0-d tensor on the params' device).

    Example::

        >>> import torch
        >>> float(squared_distance([torch.tensor([1.0, 2.0])], [torch.tensor([0.0, 0.0])]))
        5.0
    """
    diffs = torch._foreach_sub([p.detach().float() for p in params], [a.float() for a in anchors])
    total = sum(torch._foreach_norm(diffs)[i] ** 2 for i in range(len(diffs)))
    return total if isinstance(total, Tensor) else torch.zeros(())  # no tensors: distance 0


def _value_and_slope(d: float, form: str, gamma: float) -> tuple[float, float]:
    """``(L_rep(d), dL_rep/dd)``."""
    if form == "negative_l2":
        return -gamma * d, -gamma
    if form == "exponential_l2":
        value = math.exp(-gamma * d)
        return value, -gamma * value
    d = max(d, MIN_DISTANCE)
    return 1.0 / (gamma * d), -1.0 / (gamma * d * d)


def repulsion_term(
    params: Sequence[Tensor], anchors: Sequence[Tensor], form: RepulsionForm = "inverse_l2", gamma: float = 1.0
) -> tuple[Tensor, Tensor]:
    """The differentiable term ``L_rep(d)`` and ``d`` (0-d float32 tensors; gradients flow to
    ``params``), for losses that add it themselves.

    Example::

        >>> import torch
        >>> p = torch.tensor([3.0, 4.0], requires_grad=True)
        >>> term, d = repulsion_term([p], [torch.zeros(2)], "negative_l2", gamma=2.0)
        >>> d.item(), term.item(), term.requires_grad
        (25.0, -50.0, True)
    """
    total = sum(((p.float() - a.detach().float()) ** 2).sum() for p, a in zip(params, anchors))
    d = total if isinstance(total, Tensor) else torch.zeros(())  # no tensors: distance 0
    if form == "negative_l2":
        return -gamma * d, d
    if form == "exponential_l2":
        return torch.exp(-gamma * d), d
    if form == "inverse_l2":
        return 1.0 / (gamma * d.clamp_min(MIN_DISTANCE)), d
    raise ValueError(f"`form` must be one of {REPULSION_FORMS}, got {form!r}.")


def repulsion_loss(
    params: Sequence[Tensor], anchors: Sequence[Tensor], form: RepulsionForm = "inverse_l2", gamma: float = 1.0
) -> float:
    """The value of the repulsion term ``L_rep(d)`` (a float).

    Example::

        >>> import torch
        >>> repulsion_loss([torch.tensor([1.0, 2.0])], [torch.zeros(2)], "negative_l2", gamma=2.0)
        -10.0
    """
    check_choice(form, "form", REPULSION_FORMS)
    gamma = check_float(gamma, "gamma", minimum=0.0, open_minimum=True, hint="e.g. 1.0")
    return _value_and_slope(float(squared_distance(params, anchors)), form, gamma)[0]


@torch.no_grad()
def add_repulsion_gradient(
    params: Sequence[Tensor],
    anchors: Sequence[Tensor],
    form: RepulsionForm = "inverse_l2",
    weight: float = 1.0,
    gamma: float = 1.0,
    masks: Optional[dict[int, Tensor]] = None,
) -> tuple[float, float]:
    """Adds ``weight * dL_rep/dtheta = weight * L_rep'(d) * 2 (theta - anchor)`` to each ``.grad``
    (parameters without a gradient get one); ``masks[i]`` restricts parameter ``i``'s addition.

    Returns:
        ``(d, L_rep(d))``.

    Example::

        >>> import torch
        >>> p = torch.tensor([1.0, 0.0], requires_grad=True); p.grad = torch.zeros(2)
        >>> add_repulsion_gradient([p], [torch.zeros(2)], "negative_l2", weight=1.0)
        (1.0, -1.0)
        >>> p.grad.tolist()    # descent on it moves p away from the anchor
        [-2.0, 0.0]
    """
    check_choice(form, "form", REPULSION_FORMS)
    weight = check_float(weight, "weight", minimum=0.0, hint="e.g. 1.0")
    gamma = check_float(gamma, "gamma", minimum=0.0, open_minimum=True, hint="e.g. 1.0")
    params = list(params)
    diffs = torch._foreach_sub([p.detach() for p in params], [a.to(p) for p, a in zip(params, anchors)])
    d = float(sum(n.float() ** 2 for n in torch._foreach_norm(diffs)))
    value, slope = _value_and_slope(d, form, gamma)
    if weight == 0.0:
        return d, value
    torch._foreach_mul_(diffs, 2.0 * weight * slope)
    for i, mask in (masks or {}).items():
        if 0 <= i < len(diffs):
            diffs[i].mul_(mask)
    pairs = [(p.grad, g) for p, g in zip(params, diffs) if p.grad is not None]
    if pairs:
        torch._foreach_add_([grad for grad, _ in pairs], [g for _, g in pairs])
    for p, g in zip(params, diffs):
        if p.grad is None:
            p.grad = g
    return d, value
