"""`GradientProjection`: EUPMU's explicit unilateral gradient surgery, as a callback for any loop."""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar, Iterator, Literal, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.nn import Parameter
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_unlearn.callbacks.masking import MaskedUpdateCallback, grads_finite
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.models.network import network_of
from lightning_unlearn.models.network import buffers_restored
from lightning_unlearn.registry import register

Scope = Literal["global", "layer"]


# ---------------------------------------------------------------------------------- functional core
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


def check_tolerance(tolerance: float) -> float:
    """Returns ``tolerance`` as a float >= 0; raises a ValueError naming the fix otherwise."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(
            f"`tolerance` (eps) must be a finite number >= 0, got {tolerance!r}: it bounds the first-order"
            " retain-loss increase per step (lr * eps); use 0.0 to forbid any increase."
        )
    return float(tolerance)


def check_scope(scope: str) -> str:
    """Returns ``scope`` if it is ``"global"`` or ``"layer"``; raises a ValueError otherwise."""
    if scope not in ("global", "layer"):
        raise ValueError(
            f"`scope` must be 'global' (all parameters as one vector) or 'layer' (each parameter tensor"
            f" separately), got {scope!r}."
        )
    return scope


# ---------------------------------------------------------------------------------- retain data
class SeededBatchSampler(Sampler[list[int]]):
    """Endless batches over ``size`` examples, resumable at any batch, shardable across ranks.

    Pass ``p`` is a permutation drawn from a generator seeded by ``(seed, p)`` and cut into
    ``max(1, size // batch_size)`` batches (a remainder is left out, so BatchNorm never sees a
    tiny batch). The sampler yields batch numbers ``offset + stride * k`` for ``k = start,
    start + 1, ...``: with ``stride = world_size`` and ``offset = rank`` the ranks draw disjoint
    batches of one shared stream. Batch ``k`` depends only on ``(seed, k)``, so a run resumed
    after ``k`` draws continues exactly where an uninterrupted run would.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, start: int = 0, stride: int = 1, offset: int = 0) -> None:
        if size <= 0 or batch_size <= 0:
            raise ValueError(f"Need a non-empty dataset and a positive batch size, got size={size}, batch_size={batch_size}.")
        self.size, self.batch_size, self.seed = size, min(batch_size, size), seed
        self.start, self.stride, self.offset = start, stride, offset

    def __iter__(self) -> Iterator[list[int]]:
        per_pass = max(1, self.size // self.batch_size)
        order, order_pass = None, -1
        for k in itertools.count(self.start):
            p, i = divmod(self.offset + self.stride * k, per_pass)
            if p != order_pass:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
                order, order_pass = torch.randperm(self.size, generator=generator), p
            yield order[i * self.batch_size:(i + 1) * self.batch_size].tolist()


def _cycle(loader: DataLoader, skip: int = 0) -> Iterator[Any]:
    """Endless batches of ``loader`` (re-iterated when exhausted), after skipping ``skip`` batches
    (modulo the loader's length when it has one)."""
    if skip and hasattr(loader, "__len__") and len(loader) > 0:
        skip %= len(loader)
    while True:
        empty = True
        for batch in loader:
            empty = False
            if skip:
                skip -= 1
                continue
            yield batch
        if empty:
            raise ValueError("The retain `dataloader` given to GradientProjection yields no batch: give it data.")


# ---------------------------------------------------------------------------------- the callback
@register(
    "gradient_projection", kind="callback",
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
    copies.

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
        if reference != "retain":
            raise ValueError(f"`reference` must be 'retain' (cross-entropy on retained data), got {reference!r}.")
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be an integer >= 1, got {every_n_steps!r}: 1 projects every step.")
        if dataloader is not None and not isinstance(dataloader, DataLoader):
            raise ValueError(f"`dataloader` must be a torch DataLoader of retained (x, y) batches, got {type(dataloader).__name__}.")
        self.reference, self.every_n_steps, self.dataloader, self.seed = reference, every_n_steps, dataloader, seed
        self.batches_drawn = 0
        self._source: Optional[Any] = None
        self._batches: Optional[Iterator[Any]] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(tolerance=self.tolerance, scope=self.scope, every_n_steps=self.every_n_steps)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(datamodule, UnlearningDataModule):
            self._source = datamodule
        elif self.dataloader is not None:
            self._source = self.dataloader
        else:
            raise ValueError(
                "GradientProjection needs retained data for the reference gradient, but the trainer has"
                f" {type(datamodule).__name__ if datamodule is not None else 'no datamodule'}: pass"
                " `datamodule=UnlearningDataModule(...)` to trainer.fit, or"
                " `GradientProjection(dataloader=<DataLoader of retained (x, y)>)`."
            )
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
        params, retain = [p for p, _ in pairs], [g for _, g in pairs]
        _all_reduce_mean(retain, trainer)
        grads = [p.grad for p in params]
        masks = _masks_of(trainer, params)
        if masks:
            idx = list(masks)
            torch._foreach_mul_([grads[i] for i in idx], [masks[i] for i in idx])
            torch._foreach_mul_([retain[i] for i in idx], [masks[i] for i in idx])
        lambda_star = project_gradients(grads, retain, self.tolerance, self.scope)
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
    def _next_batch(self, trainer: L.Trainer, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._batches is None:
            self._batches = self._stream(self.batches_drawn, trainer.world_size, trainer.global_rank)
        batch = next(self._batches)
        self.batches_drawn += 1
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"GradientProjection needs retained (x, y) batches, got {type(batch).__name__}.")
        return batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)

    def _stream(self, start: int, world_size: int, rank: int) -> Iterator[Any]:
        if isinstance(self._source, UnlearningDataModule):
            retain: Dataset = self._source.split("retain")
            sampler = SeededBatchSampler(len(retain), self._source.batch_size, self.seed, start, world_size, rank)
            return iter(DataLoader(retain, batch_sampler=sampler, num_workers=self._source.num_workers))
        if self._source is None:
            raise ValueError("GradientProjection has no retained data: it is set up by trainer.fit.")
        return _cycle(self._source, start)

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


def _masks_of(trainer: L.Trainer, params: list[Parameter]) -> dict[int, Tensor]:
    """Position in ``params`` -> the intersection of the masks the trainer's mask callbacks hold for it."""
    position = {id(p): i for i, p in enumerate(params)}
    masks: dict[int, Tensor] = {}
    for callback in trainer.callbacks:
        masked = getattr(callback, "masked", None) if isinstance(callback, MaskedUpdateCallback) else None
        if masked is None:
            continue
        for p, m in zip(masked.params, masked.masks):
            i = position.get(id(p))
            if i is not None:
                masks[i] = m if i not in masks else masks[i] & m
    return masks
