"""`DynamicMask`: a gradient mask re-derived during training by prune-and-regrow at constant density.

A thin Lightning adapter over :func:`lightning_unlearn.functional.drop_and_regrow`,
:func:`~lightning_unlearn.functional.turnover_at` and the shared masking adapter.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning as L
import torch
from torch import Tensor

from lightning_unlearn.callbacks.masking import MaskedUpdateCallback
from lightning_unlearn.functional.masks import (
    ParameterFilter,
    Scope,
    check_scope,
    drop_and_regrow,
    grads_finite,
    topk_mask,
    turnover_at,
)
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_fraction, check_int


@register(
    "dynamic_mask",
    kind="callback",
    cost="per step: one foreach add (gradient accumulator) + one masked multiply; a per-tensor top-k every `update_every` steps",
    paper="Li et al., Sculpting Memory: Multi-Concept Forgetting via Dynamic Mask and Concept-Aware Optimization, ICCV 2025",
)
class DynamicMask(MaskedUpdateCallback):
    """Dynamic gradient mask (Li et al., ICCV 2025, "Sculpting Memory"), adapted to classifiers:
    the set of weights allowed to change is re-derived from the current optimisation state.

    Rule (coulsonlee/Sculpting-Memory-ICCV-2025 ``multi_dst_train.py``), with ``A`` the raw
    (unmasked, signed) gradient accumulated every optimiser step:

    * warm-up, the first ``warmup_steps`` steps: no weight changes (every entry masked, frozen
      entries restored whatever ``strict`` says), gradients only accumulated into ``A``;
    * end of warm-up: initial mask = the top ``density`` fraction of ``|A|`` (per tensor with
      ``scope="layer"``, the reference's choice), then ``A`` is reset;
    * every ``update_every`` steps after that, while fewer than ``stop_fraction`` of the training
      steps (``trainer.estimated_stepping_batches``) are done: prune-and-regrow at constant
      density, ``n = max(1, floor(tau * #active))``, drop the ``n`` active entries with the
      smallest ``|A|``, activate the ``n`` inactive ones with the largest ``|A|``, reset ``A``;
      ``tau = turnover * 0.5 * (1 + cos(pi * step / total_steps))`` (cosine decay);
    * entries leaving the mask are frozen at their current value (strict: bit-identical, their
      optimiser state cleared).

    ``A`` reads the gradients in ``on_before_optimizer_step``, before this callback masks them;
    stacked after another mask callback it sees that callback's masked gradients.
    Defaults from the reference: density 0.5, turnover 0.2, stop after 80 % of training, warm-up
    50 steps, an update every 100 steps (tune both to your run length); every trainable parameter
    is selected (the reference masks cross-attention matrices of a diffusion UNet).
    Cost per step: one foreach add into ``A`` (one full-size float buffer per parameter) and the
    gradient mask; a top-k per tensor at each update. Needs no data of its own.
    History of the updates: :attr:`history` (``step``, ``tau``, ``swapped``, ``density``).
    The update is :func:`~lightning_unlearn.functional.drop_and_regrow` with the schedule
    :func:`~lightning_unlearn.functional.turnover_at` (both usable without a trainer).

    Args:
        density: fraction of the selected weights allowed to change, in (0, 1].
        warmup_steps: optimiser steps of accumulation before the first mask (>= 1).
        update_every: optimiser steps between two prune-and-regrow updates (>= 1).
        turnover: initial turnover fraction ``tau0`` in [0, 1].
        stop_fraction: fraction of the training steps after which the mask stays fixed, in [0, 1].
        scope: ``"layer"`` (top-k within each tensor) or ``"global"``.
        parameters: regex(es) selecting parameters by name (default: all trainable ones).
        strict: keep frozen weights bit-identical after warm-up (during warm-up always).

    Raises:
        ValueError: any argument out of range; at setup, a ``parameters`` filter matching nothing;
            at fit start (before any step), a training of unknown length.
    """

    def __init__(
        self,
        density: float = 0.5,
        warmup_steps: int = 50,
        update_every: int = 100,
        turnover: float = 0.2,
        stop_fraction: float = 0.8,
        scope: Scope = "layer",
        parameters: ParameterFilter = None,
        strict: bool = True,
    ) -> None:
        super().__init__(parameters, strict)
        self.density_target = check_fraction(density, "density", hint="the fraction of the selected weights allowed to change.")
        self.warmup_steps = check_int(
            warmup_steps, "warmup_steps", minimum=1, hint="steps of accumulation before the first mask."
        )
        self.update_every = check_int(update_every, "update_every", minimum=1, hint="optimiser steps between two mask updates.")
        self.turnover = check_fraction(turnover, "turnover", allow_zero=True, hint="0 keeps the first mask fixed.")
        self.stop_fraction = check_fraction(
            stop_fraction, "stop_fraction", allow_zero=True, hint="the fraction of training after which the mask stays fixed."
        )
        self.scope = check_scope(scope)
        self.accumulator: Optional[list[Tensor]] = None
        self._total_steps = math.inf
        self.history: list[dict[str, float]] = []

    def key_args(self) -> dict[str, Any]:
        return {**super().key_args(), "density": self.density_target, "scope": self.scope}

    # ------------------------------------------------------------------ schedule
    def _accumulating(self, step: int) -> bool:
        return step < self.warmup_steps or step < self.stop_fraction * self._total_steps

    def enforce_strict(self, trainer: L.Trainer) -> bool:
        return self.strict or trainer.global_step <= self.warmup_steps

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._total_steps = float(trainer.estimated_stepping_batches)

    def build_masks(self, trainer: L.Trainer, pl_module: L.LightningModule, named: list[tuple[str, Any]]) -> list[Tensor]:
        if not math.isfinite(trainer.estimated_stepping_batches):
            raise ValueError("DynamicMask needs a training of known length: set `max_epochs` or `max_steps` on the Trainer.")
        self.accumulator = [torch.zeros_like(p) for _, p in named]
        self.history = []
        return [torch.zeros_like(p, dtype=torch.bool) for _, p in named]

    @torch.no_grad()
    def before_masking(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._accumulating(trainer.global_step):
            return
        pairs = [(a, p.grad) for a, p in zip(self._accumulator, self._masked.params) if p.grad is not None]
        grads = [g for _, g in pairs]
        if grads and grads_finite(grads):
            torch._foreach_add_([a for a, _ in pairs], grads)

    def after_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step, total = trainer.global_step, self._total_steps
        since_warmup = step - self.warmup_steps
        if since_warmup < 0 or since_warmup % self.update_every or (since_warmup > 0 and step >= self.stop_fraction * total):
            return
        scores = torch._foreach_abs(self._accumulator)
        if since_warmup == 0:
            masks, tau = topk_mask(scores, self.density_target, self.scope), 0.0
            swapped = sum(int(m.sum()) for m in masks)
        else:
            tau = turnover_at(self.turnover, step / total)
            masks, swapped = drop_and_regrow(self._masked.masks, scores, tau, self.scope)
        self._masked.set_masks(masks)
        torch._foreach_zero_(self._accumulator)
        density = self._masked.density()
        self.history.append({"step": step, "tau": tau, "swapped": swapped, "density": density})
        pl_module.log_dict({"dynamic_mask/tau": tau, "dynamic_mask/swapped": float(swapped), "dynamic_mask/density": density})

    @property
    def _accumulator(self) -> list[Tensor]:
        if self.accumulator is None:
            raise RuntimeError("DynamicMask: the gradient accumulator is built with the masks (at fit start).")
        return self.accumulator

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(h) for h in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]

    def extra_tensor_state(self) -> dict[str, Any]:
        return {"accumulator": [a.detach().clone() for a in self._accumulator]}

    def load_extra_tensor_state(self, state: dict[str, Any]) -> None:
        self.accumulator = [a.to(p.device, p.dtype) for a, p in zip(state["accumulator"], self._masked.params)]
