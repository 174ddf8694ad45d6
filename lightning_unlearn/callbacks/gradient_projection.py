"""`GradientProjection`: EUPMU's explicit unilateral gradient surgery, as a callback for any loop.

A thin Lightning adapter over :func:`lightning_unlearn.functional.project_gradients`: it draws the
retain batches (:func:`lightning_unlearn.data.access.retain_stream`), computes the retain gradient,
averages it across ranks, restricts both gradients to the masks of the mask callbacks on the
trainer, and logs the multiplier.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal, Optional

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.nn import Parameter
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from lightning_unlearn.callbacks.masking import masked_parameters_of
from lightning_unlearn.data.access import retain_stream
from lightning_unlearn.functional.masks import Scope, check_scope, grads_finite, parameter_masks
from lightning_unlearn.functional.projection import check_tolerance, project_gradients
from lightning_unlearn.models.network import buffers_restored, network_of
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_choice, check_int


@register(
    "gradient_projection",
    kind="callback",
    class_labels=False,
    cost="+1 F/B on a retain batch (every_n_steps), 3 fused reductions over the gradients",
    paper="Zhou et al., NeurIPS 2025 (EUPMU), explicit unilateral gradient surgery",
)
class GradientProjection(Callback):
    """EUPMU's explicit unilateral gradient surgery (Zhou et al., "Efficient Utility-Preserving
    Machine Unlearning with Implicit Gradient Surgery", NeurIPS 2025, Proposition 3.2; reference
    ``weighted_methods/weight_methods.py``, class ``ImplicitGradientSurgery`` in
    anseryuer/EUPMU-Efficient-Utility-Preserving-Machine-Unlearning).

    Unlearning as a constrained problem: minimise the forgetting objective while the retain loss
    rises by at most ``eps`` per step. The module's own training loss is the forgetting objective
    (e.g. ``RandomLabel(alpha=0)``); its gradient ``g_f`` is in ``.grad`` when an optimiser steps.
    The callback computes the retain gradient ``g_r`` itself (cross-entropy on a retain batch)
    and replaces ``g_f`` by the closest direction that does not raise the retain loss by more
    than ``eps`` to first order:

    ``lambda* = (-<g_r, g_f> - eps) / (||g_r||^2 + 1e-8)``; ``g_f += lambda* g_r`` if ``lambda* > 0``.

    "Unilateral": only the forgetting gradient is corrected, and only when it conflicts with the
    retain gradient beyond ``eps``; the optimiser then steps with the corrected gradient (SGD:
    retain-loss change ``-lr <g_r, d> <= lr * eps``). ``scope="global"`` uses all parameters as one
    vector (the paper); ``scope="layer"`` applies the rule per parameter tensor. The bound is on
    the gradient handed to the optimiser: with momentum the applied update also carries past
    directions (plain SGD keeps the bound per step; the digits config uses momentum 0).

    Where it acts: ``on_before_optimizer_step`` — once per optimiser step, after gradient
    accumulation, AMP unscaling and DDP all-reduce, before gradient clipping. It works with
    automatic and manual optimisation (the hook fires on every ``optimizer.step()``) and corrects
    the parameters of the stepping optimiser that have a gradient. A step whose gradient is not
    finite (fp16 overflow, skipped by the scaler) is left alone and consumes no retain batch.

    The retain pass: a batch of D_r from the trainer's :class:`UnlearningDataModule` (training
    transforms, its batch size and workers; an endless stream reshuffled per pass from ``seed``,
    resumable exactly), or else from ``dataloader`` (cycled). Forward in the network's current
    mode (train mode: BatchNorm uses batch statistics, as in a training step), in full precision
    (outside autocast), through the network itself (``pl_module.model`` for our methods, else
    ``pl_module``); BatchNorm running statistics are restored afterwards, so they are updated
    once per step (by the module's own pass), not twice. ``g_r`` goes into separate buffers
    (``torch.autograd.grad``), ``.grad`` is untouched. Under DDP each rank draws its own retain
    batch (disjoint batches of the seeded stream; a ``dataloader`` given here is the user's to
    shard) and ``g_r`` is averaged across ranks with an explicit all-reduce (going through the DDP
    wrapper would not reduce a ``torch.autograd.grad`` pass), so every rank applies the same
    correction. Inner products and norms are fused ``torch._foreach_*`` reductions, no flattened
    copies (:func:`~lightning_unlearn.functional.project_gradients`, usable without a trainer).

    With mask callbacks (``SaliencyMask``, ``DynamicMask``, pruning; any
    :class:`~lightning_unlearn.callbacks.masking.MaskedUpdateCallback` on the trainer) the surgery
    runs in the masked subspace: ``g_f`` and ``g_r`` are masked first, so the corrected update
    stays inside the mask and the retain bound holds for the update actually applied, whatever
    the order of the callbacks (SalUn mask + projection = EUPMU's ``salun_eu`` recipe).

    Logged each projected step: ``gradient_projection/lambda`` (applied multiplier, mean over
    tensors for ``scope="layer"``) and ``gradient_projection/fired`` (1 if the correction was
    applied; for ``"layer"`` the fraction of tensors corrected).

    Defaults: ``eps = 0`` (the reference code's default ``epsilon``), global scope, every step.
    Cost per projected step: one forward/backward of the network on a retain batch, three fused
    reductions over the gradients and one temporary of the gradients' size.
    Data needed: retained data (D_r) with labels.

    Args:
        tolerance: ``eps >= 0``, the allowed first-order retain-loss increase per unit learning rate.
        reference: the constraint's loss; ``"retain"`` (cross-entropy on retained data) only.
        scope: ``"global"`` (all parameters as one vector) or ``"layer"`` (per parameter tensor).
        every_n_steps: project on optimiser steps ``0, n, 2n, ...`` only (others keep ``g_f``).
        dataloader: retained ``(x, y)`` batches when the trainer's datamodule is not an
            :class:`UnlearningDataModule`.
        seed: seed of the retain-batch order drawn from an :class:`UnlearningDataModule`.

    Raises:
        ValueError: at construction for ``tolerance < 0``, an unknown ``scope``/``reference`` or
            ``every_n_steps < 1``; at fit start, before any weight changes, when there is no
            retained data (neither an :class:`UnlearningDataModule` nor ``dataloader``).

    Example::

        trainer = L.Trainer(max_epochs=5, callbacks=[GradientProjection(tolerance=0.0)])
        trainer.fit(RandomLabel(net, alpha=0.0), datamodule=dm)   # forget loss only; retain via projection
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("retain",)

    def __init__(
        self,
        tolerance: float = 0.0,
        reference: Literal["retain"] = "retain",
        scope: Scope = "global",
        every_n_steps: int = 1,
        dataloader: Optional[DataLoader] = None,
        seed: int = 0,
    ) -> None:
        self.tolerance = check_tolerance(tolerance)
        self.scope = check_scope(scope)
        self.reference = check_choice(
            reference, "reference", ("retain",), hint="the constraint is the cross-entropy on retained data."
        )
        self.every_n_steps = check_int(every_n_steps, "every_n_steps", minimum=1, hint="1 projects every step.")
        if dataloader is not None and not isinstance(dataloader, DataLoader):
            raise ValueError(
                f"`dataloader` must be a torch DataLoader of retained (x, y) batches or None, got {type(dataloader).__name__}:"
                " wrap the data in torch.utils.data.DataLoader."
            )
        self.dataloader, self.seed = dataloader, check_int(seed, "seed")
        self.batches_drawn = 0
        self._batches: Optional[Iterator[tuple[Tensor, Tensor]]] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(tolerance=self.tolerance, scope=self.scope, every_n_steps=self.every_n_steps)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._stream(trainer, 0)  # fails here, before any weight changes, when there is no retained data
        self._batches = None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad and p.grad is not None]
        if not params or not grads_finite([p.grad for p in params]):
            return
        x, y = self._next_batch(trainer, pl_module.device)
        retain = self._retain_gradients(pl_module, params, x, y)
        pairs = [(p, g) for p, g in zip(params, retain) if g is not None]
        if not pairs:
            return
        params, retain_grads = [p for p, _ in pairs], [g for _, g in pairs]
        _all_reduce_mean(retain_grads, trainer)
        grads = [p.grad for p in params if p.grad is not None]  # every one: params are those with a gradient
        masks = parameter_masks(params, masked_parameters_of(trainer))
        if masks:
            idx = list(masks)
            torch._foreach_mul_([grads[i] for i in idx], [masks[i] for i in idx])
            torch._foreach_mul_([retain_grads[i] for i in idx], [masks[i] for i in idx])
        lambda_star = project_gradients(grads, retain_grads, self.tolerance, self.scope)
        applied = torch.where(lambda_star.isfinite(), lambda_star.clamp_min(0.0), 0.0)
        pl_module.log("gradient_projection/lambda", applied.mean(), on_step=True, on_epoch=False)
        pl_module.log("gradient_projection/fired", (applied > 0).float().mean(), on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"batches_drawn": self.batches_drawn}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches_drawn = int(state_dict["batches_drawn"])
        self._batches = None  # re-created from `batches_drawn` at the next draw

    # ------------------------------------------------------------------ helpers
    def _stream(self, trainer: L.Trainer, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        return retain_stream(trainer, "GradientProjection", self.seed, start, self.dataloader)

    def _next_batch(self, trainer: L.Trainer, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._batches is None:
            self._batches = self._stream(trainer, self.batches_drawn)
        x, y = next(self._batches)
        self.batches_drawn += 1
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    @staticmethod
    def _retain_gradients(pl_module: L.LightningModule, params: list[Parameter], x: Tensor, y: Tensor) -> list[Optional[Tensor]]:
        network = network_of(pl_module)
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False), buffers_restored(network):
            loss = F.cross_entropy(network(x), y)
            return list(torch.autograd.grad(loss, params, allow_unused=True))  # before BN buffers are restored


def _all_reduce_mean(tensors: list[Tensor], trainer: L.Trainer) -> None:
    """Averages ``tensors`` in place across DDP ranks (no-op in a single process)."""
    if trainer.world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    works = [torch.distributed.all_reduce(t, async_op=True) for t in tensors]  # no foreach collective exists
    for work in works:
        work.wait()
    torch._foreach_div_(tensors, float(trainer.world_size))
