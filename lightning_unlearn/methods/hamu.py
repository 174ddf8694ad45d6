"""HAMU-Q: hardness-aware multi-objective unlearning, one constrained step per paired batch."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, cast

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from lightning_unlearn.functional.hardness import hamu_update, hardness_thresholds
from lightning_unlearn.functional.masks import grads_finite
from lightning_unlearn.methods.base import Batch, UnlearningMethod
from lightning_unlearn.models.network import eval_mode
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_choice, check_float


@register(
    "hamu",
    kind="method",
    cost="2 F/B per step (a D_r batch and a D_f batch), a few fused reductions per parameter tensor",
    paper="Chen, Niu, Sim, Liu, Chen, Low, How Hard Can It Be? Hardness-Aware Multi-Objective Unlearning, ICML 2026"
    " (aoi3142/HAMU, HAMU-Q)",
)
class HAMU(UnlearningMethod):
    """HAMU-Q (Chen, Niu et al., ICML 2026): at every step, improve forgetting by a set amount at the
    least cost to the retained data, with a step shaped by the request's hardness.

    Per paired batch, the gradients of the retain loss ``g_r = grad CE(D_r batch)`` and of the
    forget loss ``g_f = grad CE(D_f batch)`` (which forgetting raises) give HAMU's hardness
    ``kappa = cos(g_r, g_f)`` (:mod:`lightning_unlearn.functional.hardness`). The update ``delta``
    solves ``min <g_r, delta>`` s.t. ``<g_f, delta> >= B`` and ``||delta|| <= R``
    (:func:`~lightning_unlearn.functional.hamu_update`):

    * easy (``kappa <= -B / (R ||g_f||)``): the plain retain-descent step ``-R g_r / ||g_r||``;
    * harder: ``(B / ||g_f||^2) g_f - sqrt(R^2 - B^2 / ||g_f||^2) g_r_perp / ||g_r_perp||``, i.e. the
      forget gradient weighted by ``B / ||g_f||^2`` plus retain descent orthogonal to it -- the
      weight of the forget objective is set by the hardness instead of a fixed coefficient;
    * infeasible (``R < B / ||g_f||``): by default the step of length ``R`` along ``g_f`` (the most
      forgetting the radius allows); ``infeasible="reference"``: the reference's
      ``(B / ||g_f||^2) g_f``, the least step that forgets ``B`` -- unbounded when ``g_f`` is small,
      which diverges on a well-trained digits model.

    As the reference's defaults (``scripts/experiments/cifar/hamu_unlearn.sh``): the radius is
    ``R = lr * ||g_r||`` (``--use_lr_radius``: on easy blocks HAMU is plain SGD on D_r), the
    constraint ``B = constraint_ratio * lr`` with ratio 0.5, applied per parameter tensor
    (``scope="layer"``) with the constraint split across tensors in proportion to
    ``||g_r,t|| ||g_f,t||`` (``--distribute_constraint_grad_norm``); ``scope="global"`` treats all
    parameters as one vector (``--full_grad``). BatchNorm is frozen (eval mode for both passes,
    ``--freeze_batchnorm``). The step is applied by plain SGD (momentum 0, weight decay 0) with
    ``grad = -delta / lr``, as the reference's ``GradientTransformOptimizer``.
    Reference lr 1e-4 with batches of 5,000 on CIFAR-10 (25 epochs); small data needs larger lr
    (the digits config uses 0.05).

    Logged per step: ``train/kappa`` (global ``cos(g_r, g_f)``), ``train/direct`` and
    ``train/rectified`` (fraction of blocks per branch), ``train/collateral`` (fraction of blocks
    with ``kappa >= kappa_2`` or infeasible: the retain loss must rise), ``train/retain_ce``,
    ``train/forget_ce``.

    Cost per step: two forward/backward passes (``torch.autograd.grad``, ``.grad`` set once for
    the step), per-tensor dot products. Data: D_f and D_r with labels. Manual optimisation:
    Lightning rejects trainer-level gradient clipping and accumulation.

    Deviations: infeasible blocks step ``R`` along ``g_f`` by default (above); a step whose
    gradients are not finite is skipped; no gradient clipping (the reference clips at ``max_grad_norm = 1``); the
    reference's optional stopping criterion (stop once the constraint exceeds ``R ||g_f|| sin theta``
    summed over blocks, i.e. collateral forgetting is unavoidable) is only logged
    (``train/collateral``), not acted upon; HAMU-U (the reciprocal variant) is not offered.

    Args:
        constraint_ratio: ``B / lr`` (>= 0).
        scope: ``"layer"`` (per parameter tensor) or ``"global"``.
        infeasible: ``"radius"`` (default) or ``"reference"`` (see above).
        radius: a fixed step length ``R`` per block (the reference's ``--hamu_radius``), or ``None``:
            ``lr * ||g_r||`` (``--use_lr_radius``, the reference's scripts).
        lr: the SGD learning rate (also sets ``R`` and ``B``).
        Other arguments: see :class:`~lightning_unlearn.methods.UnlearningMethod` (momentum and
        weight decay are fixed at 0: the step is HAMU's).

    Example::

        >>> from lightning_unlearn.models import SmallCNN
        >>> method = HAMU(SmallCNN(in_channels=1, num_classes=10), lr=0.05)
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "forget"

    def __init__(
        self,
        model: nn.Module,
        constraint_ratio: float = 0.5,
        scope: Literal["layer", "global"] = "layer",
        infeasible: Literal["radius", "reference"] = "radius",
        radius: Optional[float] = None,
        lr: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        self.constraint_ratio = check_float(constraint_ratio, "constraint_ratio", minimum=0.0, hint="B / lr, e.g. 0.5")
        self.scope = check_choice(scope, "scope", ("layer", "global"))
        self.infeasible = check_choice(infeasible, "infeasible", ("radius", "reference"))
        self.radius = (
            None
            if radius is None
            else check_float(radius, "radius", minimum=0.0, open_minimum=True, hint="a step length, or None: lr * ||g_r||")
        )
        for name in ("momentum", "weight_decay", "optimizer"):
            if kwargs.get(name):
                raise ValueError(f"HAMU applies its own step with plain SGD: drop `{name}`.")
        kwargs.update(momentum=0.0, weight_decay=0.0)
        super().__init__(model, lr=lr, **kwargs)
        self.automatic_optimization = False

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The two losses whose gradients HAMU combines (its step is taken in :meth:`training_step`)."""
        retain_ce = self.cross_entropy(self.model(batch["retain"][0]), batch["retain"][1])
        forget_ce = self.cross_entropy(self.model(batch["forget"][0]), batch["forget"][1])
        return retain_ce, {"forget_ce": forget_ce}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        splits = self._as_splits(batch)
        params = self.trainable_parameters()
        optimizer = cast(LightningOptimizer, self.optimizers())  # the one optimiser of configure_optimizers
        lr = float(optimizer.param_groups[0]["lr"])
        with eval_mode(self.model):  # frozen BatchNorm, as the reference
            retain_ce, logs = self.unlearning_loss(splits)
            g_r = torch.autograd.grad(retain_ce, params, materialize_grads=True)
            g_f = torch.autograd.grad(logs["forget_ce"], params, materialize_grads=True)
        if not grads_finite([*g_r, *g_f]):  # fp16 overflow or a diverged batch: skip
            self.log("train/skipped", 1.0)
            return retain_ce.detach()
        constraint = self.constraint_ratio * lr
        blocks = [(list(range(len(params))))] if self.scope == "global" else [[i] for i in range(len(params))]
        shares = self._constraint_shares(blocks, g_r, g_f)
        deltas: list[Tensor] = [torch.zeros_like(p) for p in params]
        branches: list[str] = []
        collateral = 0
        for block, share in zip(blocks, shares):
            gr, gf = [g_r[i] for i in block], [g_f[i] for i in block]
            radius = self.radius if self.radius is not None else lr * float(sum(g.double().pow(2).sum() for g in gr)) ** 0.5
            step = hamu_update(gr, gf, radius, constraint * share, self.infeasible)
            forget_norm = float(sum(g.double().pow(2).sum() for g in gf)) ** 0.5
            kappa_2 = hardness_thresholds(constraint * share, radius, forget_norm)[1]
            collateral += int(not kappa_2 == kappa_2 or step.kappa >= kappa_2)  # nan: infeasible
            for i, d in zip(block, step.delta):
                deltas[i] = d
            branches.append(step.branch)
        optimizer.zero_grad()
        grads = torch._foreach_div(deltas, -lr) if lr > 0 else torch._foreach_mul(deltas, 0.0)
        for p, g in zip(params, grads):  # the step the optimiser takes (its weight decay and momentum included)
            p.grad = g
        optimizer.step()
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "step" or (self.trainer.is_last_batch and config.interval == "epoch"):
                scheduler = config.scheduler
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):  # a user factory's: steps on its monitor
                    scheduler.step(self.trainer.callback_metrics[str(config.monitor)])
                else:
                    scheduler.step()
        kappa = _cos(g_r, g_f)
        n = max(len(branches), 1)
        values = {
            "loss": retain_ce.detach(),
            "retain_ce": retain_ce.detach(),
            "forget_ce": logs["forget_ce"].detach(),
            "kappa": torch.tensor(kappa),
            "direct": torch.tensor(branches.count("direct") / n),
            "rectified": torch.tensor(branches.count("rectified") / n),
            "collateral": torch.tensor(collateral / n),
        }
        self.log_dict({f"train/{k}": v for k, v in values.items()})
        return retain_ce.detach()

    @staticmethod
    def _constraint_shares(blocks: list[list[int]], g_r: tuple[Tensor, ...], g_f: tuple[Tensor, ...]) -> list[float]:
        """Each block's share of the constraint: proportional to ``||g_r,t|| ||g_f,t||``."""
        if len(blocks) == 1:
            return [1.0]
        weights = [
            float(sum(g_r[i].double().pow(2).sum() for i in b)) ** 0.5
            * float(sum(g_f[i].double().pow(2).sum() for i in b)) ** 0.5
            for b in blocks
        ]
        total = sum(weights)
        return [w / total if total > 0 else 1.0 / len(blocks) for w in weights]


def _cos(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> float:
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))
    na = sum(float(x.double().pow(2).sum()) for x in a) ** 0.5
    nb = sum(float(y.double().pow(2).sum()) for y in b) ** 0.5
    return dot / max(na * nb, 1e-12)
