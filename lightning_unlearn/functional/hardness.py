"""How hard is a deletion request? HAMU's hardness and its constrained update (Chen, Niu et al., ICML 2026).

HAMU ("How Hard Can It Be? Hardness-Aware Multi-Objective Unlearning", reference
aoi3142/HAMU ``hamu/methods/core.py``) measures the local hardness of reconciling forgetting
(raise the forget loss ``L_f``) with utility (keep the retain loss ``L_r`` low) by the alignment
of their gradients,

    kappa = cos(g_r, g_f),   g_r = grad L_r,  g_f = grad L_f.

Forget and retain data that look alike have aligned gradients (``kappa`` near 1): raising the
forget loss then raises the retain loss too. For one step of length at most ``R`` that must raise
``L_f`` by at least ``B`` (first order), with ``a = B / (R ||g_f||)``:

* ``kappa <= kappa_1 = -a``: the plain retain-descent step already forgets enough (*direct*);
* ``kappa_1 < kappa < kappa_2 = sqrt(1 - a^2)``: a *rectified* step (part ``g_f``, part the
  retain gradient orthogonal to it) still lowers ``L_r``;
* ``kappa >= kappa_2``: ``L_r`` must rise (*collateral forgetting*): stop, or accept the cost.

Per example, ``kappa_i = cos(grad l(x_i), g_r)`` for each forget example gives the distribution of
hardness inside a request (:func:`request_hardness`). Pure torch (no Lightning).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import Parameter

from lightning_unlearn.validation import check_choice, check_float

__all__ = ["HAMUStep", "Hardness", "hamu_update", "hardness_thresholds", "mean_gradient", "request_hardness"]

_EPS = 1e-12


@dataclass(frozen=True)
class Hardness:
    """The hardness of one request (see the module docstring).

    Attributes:
        kappa: ``cos(g_r, g_f)`` of the mean forget and retain gradients.
        forget_grad_norm: ``||g_f||``.
        retain_grad_norm: ``||g_r||``.
        per_example_mean: mean of ``kappa_i`` over the forget examples.
        per_example_median: their median.
        per_example_q10: their 10 % quantile.
        per_example_q90: their 90 % quantile.
        fraction_positive: fraction of forget examples with ``kappa_i > 0`` (raising their loss
            raises the retain loss, to first order).
        forget_examples: number of forget examples scored.
    """

    kappa: float
    forget_grad_norm: float
    retain_grad_norm: float
    per_example_mean: float
    per_example_median: float
    per_example_q10: float
    per_example_q90: float
    fraction_positive: float
    forget_examples: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mean_gradient(model: nn.Module, params: Sequence[Parameter], batches: Iterable, device: torch.device) -> list[Tensor]:
    """Sample-weighted mean gradient of the cross-entropy over ``batches`` (``(x, y)`` pairs) w.r.t.
    ``params``; the model runs in its current mode, ``.grad`` is untouched."""
    total = [torch.zeros_like(p) for p in params]
    count = 0
    with torch.enable_grad():
        for batch in batches:
            x, y = batch[0].to(device), batch[1].to(device)
            loss = F.cross_entropy(model(x), y, reduction="sum")
            grads = torch.autograd.grad(loss, list(params), allow_unused=True)
            for t, g in zip(total, grads):
                if g is not None:
                    t.add_(g)
            count += len(y)
    if count == 0:
        raise ValueError("mean_gradient got no batch.")
    return [t / count for t in total]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    total = sum((x.double() * y.double()).sum() for x, y in zip(a, b))
    return total if isinstance(total, Tensor) else torch.zeros((), dtype=torch.float64)  # no tensors: 0


@torch.no_grad()
def request_hardness(
    model: nn.Module,
    forget: Iterable,
    retain: Iterable,
    device: Optional[torch.device] = None,
    chunk_size: int = 64,
) -> tuple[Hardness, Tensor]:
    """HAMU's hardness of a request, before unlearning: the request's ``kappa`` and the per-example
    ``kappa_i`` of every forget example.

    The model is scored in eval mode (BatchNorm running statistics; per-example gradients of one
    sample need them), its mode restored afterwards. ``g_r`` is the mean gradient over the given
    retain batches (a sample of D_r is enough), ``g_f`` over all forget batches; per-example
    gradients are vectorised with ``torch.func`` in chunks of ``chunk_size`` and reduced to their
    dot product with ``g_r`` and their norm at once (never stored).

    Args:
        model: the classifier before unlearning.
        forget: ``(x, y)`` batches of D_f.
        retain: ``(x, y)`` batches of (a sample of) D_r.
        device: where to run (default: the model's).
        chunk_size: examples per vectorised per-example gradient chunk.

    Returns:
        ``(Hardness, kappa_i)``: the summary and the ``(|D_f|,)`` per-example hardness (float64).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> net = nn.Linear(3, 2)
        >>> x = torch.randn(8, 3); y = torch.randint(2, (8,))
        >>> summary, per_example = request_hardness(net, [(x[:4], y[:4])], [(x[4:], y[4:])])
        >>> per_example.shape, -1.0 <= summary.kappa <= 1.0
        (torch.Size([4]), True)
    """
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        g_r = mean_gradient(model, params, retain, device)
        forget = list(forget)
        g_f = mean_gradient(model, params, forget, device)
        r_norm = math.sqrt(float(_dot(g_r, g_r)))
        f_norm = math.sqrt(float(_dot(g_f, g_f)))
        kappa = float(_dot(g_r, g_f)) / max(r_norm * f_norm, _EPS)
        buffers = {n: b.detach() for n, b in model.named_buffers()}
        detached = {n: p.detach() for n, p in named}

        def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            return F.cross_entropy(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
        values = []
        for batch in forget:
            x, y = batch[0].to(device), batch[1].to(device)
            for start in range(0, len(y), chunk_size):
                with torch.enable_grad():
                    grads = per_sample(detached, x[start : start + chunk_size], y[start : start + chunk_size])
                dots = sum((grads[n].flatten(1).double() * g.flatten().double()).sum(1) for (n, _), g in zip(named, g_r))
                norms = sum(grads[n].flatten(1).double().pow(2).sum(1) for n, _ in named).sqrt()
                values.append(dots / (norms * r_norm).clamp_min(_EPS))
    finally:
        model.train(was_training)
    kappa_i = torch.cat(values).cpu()
    quantiles = torch.quantile(kappa_i, torch.tensor([0.1, 0.5, 0.9], dtype=kappa_i.dtype))
    summary = Hardness(
        kappa=kappa,
        forget_grad_norm=f_norm,
        retain_grad_norm=r_norm,
        per_example_mean=float(kappa_i.mean()),
        per_example_median=float(quantiles[1]),
        per_example_q10=float(quantiles[0]),
        per_example_q90=float(quantiles[2]),
        fraction_positive=float((kappa_i > 0).double().mean()),
        forget_examples=len(kappa_i),
    )
    return summary, kappa_i


def hardness_thresholds(constraint: float, radius: float, forget_grad_norm: float) -> tuple[float, float]:
    """HAMU's ``(kappa_1, kappa_2)`` for a step of length ``radius`` that must raise the forget
    loss by ``constraint``: ``a = B / (R ||g_f||)``, ``kappa_1 = -a``, ``kappa_2 = sqrt(1 - a^2)``
    (``nan`` when ``a > 1``: no step of that length can forget that much).

    Example::

        >>> hardness_thresholds(0.5, 1.0, 1.0)
        (-0.5, 0.8660254037844386)
    """
    a = constraint / max(radius * forget_grad_norm, _EPS)
    return (-a, math.sqrt(1.0 - a * a)) if a <= 1.0 else (float("nan"), float("nan"))


@dataclass(frozen=True)
class HAMUStep:
    """One HAMU-Q update of one block (a tensor, or all parameters as one vector)."""

    delta: list[Tensor]
    branch: str  # "direct", "rectified", "colinear", "infeasible"
    kappa: float


def hamu_update(
    retain: Sequence[Tensor], forget: Sequence[Tensor], radius: float, constraint: float, infeasible: str = "radius"
) -> HAMUStep:
    """HAMU-Q's update of a block: the step of length at most ``radius`` that raises the forget loss
    by at least ``constraint`` (first order) and lowers the retain loss most.

    ``retain`` = ``g_r`` (gradient of the retain loss), ``forget`` = ``g_f`` (gradient of the
    forget loss, which forgetting raises), as lists of tensors forming one vector. With
    ``g_r_perp = g_r - (<g_r, g_f> / ||g_f||^2) g_f`` (reference ``compute_hamu_update``):

    * ``<g_r, g_f> <= -B ||g_r|| / R`` (``kappa <= kappa_1``): ``delta = -R g_r / ||g_r||`` (direct);
    * ``R^2 < B^2 / ||g_f||^2``: infeasible. ``infeasible="reference"``: ``delta = (B / ||g_f||^2) g_f``
      (the reference: the least step that forgets ``B``, arbitrarily long when ``g_f`` is small);
      ``"radius"`` (default): ``delta = R g_f / ||g_f||``, the most forgetting a step of length
      ``R`` allows (our deviation: keeps a well-trained model, whose forget gradient is tiny, from
      diverging);
    * ``g_r_perp = 0``: ``delta = (B / ||g_f||^2) g_f`` (colinear);
    * else ``delta = (B / ||g_f||^2) g_f - sqrt(R^2 - B^2 / ||g_f||^2) g_r_perp / ||g_r_perp||`` (rectified).

    Apply as ``theta += delta``.

    Example::

        >>> import torch
        >>> step = hamu_update([torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 0.0])], radius=1.0, constraint=0.5)
        >>> step.branch, step.delta[0].tolist()
        ('colinear', [0.5, 0.0])
    """
    check_choice(infeasible, "infeasible", ("radius", "reference"))
    radius = check_float(radius, "radius", minimum=0.0, hint="the step length R")
    constraint = check_float(constraint, "constraint", minimum=0.0, hint="the forget-loss increase B")
    dot = float(_dot(retain, forget))
    r_sq, f_sq = float(_dot(retain, retain)), float(_dot(forget, forget))
    r_norm, f_norm = math.sqrt(r_sq), math.sqrt(f_sq)
    kappa = dot / max(r_norm * f_norm, _EPS)
    if f_sq < _EPS:  # nothing to forget along this block
        if constraint <= _EPS and r_norm > _EPS:
            return HAMUStep([-(radius / r_norm) * g for g in retain], "direct", kappa)
        return HAMUStep([torch.zeros_like(g) for g in retain], "infeasible", kappa)
    ascent = [(constraint / f_sq) * g for g in forget]
    discriminant = radius * radius - constraint * constraint / f_sq
    if discriminant < 0:
        if infeasible == "radius":
            return HAMUStep([(radius / f_norm) * g for g in forget], "infeasible", kappa)
        return HAMUStep(ascent, "infeasible", kappa)
    if r_norm > _EPS and dot <= -constraint * r_norm / max(radius, _EPS):
        return HAMUStep([-(radius / r_norm) * g for g in retain], "direct", kappa)
    perp = [r - (dot / f_sq) * f for r, f in zip(retain, forget)]
    perp_norm = math.sqrt(float(_dot(perp, perp)))
    if perp_norm < _EPS:
        return HAMUStep(ascent, "colinear", kappa)
    scale = (radius if constraint <= _EPS else math.sqrt(discriminant)) / perp_norm
    return HAMUStep([a - scale * p for a, p in zip(ascent, perp)], "rectified", kappa)
