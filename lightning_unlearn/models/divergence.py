"""Stopping a fit cleanly when its loss stops being finite, before the step it would corrupt."""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = ["DivergenceGuard"]


class DivergenceGuard:
    """Watches the losses and gradients of a fit; at the first non-finite one (NaN or inf) it
    refuses that optimiser step and every later one, and asks the trainer to stop.

    Wired to three hooks (a LightningModule's or a Callback's): :meth:`snapshot` in
    ``on_train_batch_start``, :meth:`check_loss` in ``on_before_backward`` (every micro-batch,
    manual optimisation included) and :meth:`before_optimizer_step` in
    ``on_before_optimizer_step`` (once per optimiser step, after accumulation, AMP unscaling and
    DDP's gradient all-reduce). A refused step leaves the weights, the buffers and the optimiser
    state exactly as after the last finite step: every gradient is set to ``None``, so SGD, Adam
    and the others skip every parameter (no momentum, no weight decay), and the buffers the
    diverging forward passes wrote (BatchNorm running statistics) are put back from the copy
    :meth:`snapshot` took at the start of the step (a few KB for BatchNorm networks). Under DDP the decision is all-reduced (one boolean per optimiser step), so every
    rank refuses the same step. Gradients are checked too (a finite but huge loss can give
    infinite gradients, and one such step turns every weight into NaN): one fused max-norm over
    the gradients per optimiser step. Under fp16 AMP with a gradient scaler, overflowing
    gradients are the scaler's business (it skips those steps and lowers its scale), so there
    only the loss counts.

    :attr:`record` then says what happened, for the report: ``{"reason", "step", "epoch",
    "loss"}`` (``step``: optimiser steps completed before the refused one).
    """

    def __init__(self) -> None:
        self.record: Optional[dict[str, Any]] = None
        self._pending: Optional[dict[str, Any]] = None
        self._last_loss: Any = None
        self._buffers: list[Tensor] = []
        self._saved: list[Tensor] = []
        self._snapshot_step: Optional[int] = None

    def snapshot(self, trainer: L.Trainer, module: nn.Module) -> None:
        """Copies ``module``'s buffers at the start of an optimiser step (the first micro-batch
        after the last step), to put them back if the step is refused."""
        if self.record is not None or self._snapshot_step == trainer.global_step:
            return
        buffers = list(module.buffers())
        if len(buffers) != len(self._buffers) or any(a is not b for a, b in zip(buffers, self._buffers)):
            self._buffers, self._saved = buffers, [b.detach().clone() for b in buffers]
        elif buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._saved, buffers)
        self._snapshot_step = trainer.global_step

    @property
    def diverged(self) -> bool:
        """Whether the fit diverged."""
        return self.record is not None

    def check_loss(self, trainer: L.Trainer, loss: Tensor) -> None:
        """Notes a non-finite ``loss`` (called before its backward)."""
        if self.record is not None or self._pending is not None or not isinstance(loss, Tensor) or not loss.numel():
            return
        value = loss.detach().float().flatten()[0]
        if not bool(torch.isfinite(loss.detach()).all()):
            self._pending = {
                "reason": "non-finite loss",
                "step": int(trainer.global_step),
                "epoch": int(trainer.current_epoch),
                "loss": _number(float(value)),
            }
        else:
            self._last_loss = value

    def before_optimizer_step(self, trainer: L.Trainer, optimizer: Optimizer) -> None:
        """Refuses the coming step (and stops the fit) once a loss was not finite on any rank."""
        if self.record is None and self._pending is None and getattr(trainer.precision_plugin, "scaler", None) is None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads and not bool(torch.stack(torch._foreach_norm(grads, float("inf"))).isfinite().all()):
                last = None if self._last_loss is None else _number(float(self._last_loss))
                self._pending = {
                    "reason": "non-finite gradients",
                    "step": int(trainer.global_step),
                    "epoch": int(trainer.current_epoch),
                    "loss": last,
                }
        local = self._pending is not None
        if self.record is None:
            flag = trainer.strategy.reduce_boolean_decision(local, all=False) if trainer.world_size > 1 else local
            if flag:
                self.stop(
                    trainer,
                    **(
                        self._pending
                        or {
                            "reason": "non-finite loss on another rank",
                            "step": int(trainer.global_step),
                            "epoch": int(trainer.current_epoch),
                            "loss": None,
                        }
                    ),
                )
        self._pending = None
        if self.record is not None:
            if self._buffers and self._snapshot_step is not None:
                with torch.no_grad():
                    torch._foreach_copy_(self._buffers, self._saved)
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None

    def stop(
        self, trainer: L.Trainer, reason: str, step: Optional[int] = None, epoch: Optional[int] = None, loss: Any = None
    ) -> None:
        """Records a divergence and asks ``trainer`` to stop (for parts that detect it themselves,
        e.g. non-finite statistics of a one-shot edit)."""
        if self.record is None:
            self.record = {
                "reason": reason,
                "step": int(trainer.global_step if step is None else step),
                "epoch": int(trainer.current_epoch if epoch is None else epoch),
                "loss": loss,
            }
            rank_zero_warn(
                f"Training diverged ({reason}, loss {loss}) at step {self.record['step']} (epoch"
                f" {self.record['epoch']}): the fit stops with the weights of the last finite step. Lower the"
                " learning rate (or the loss's weights) and run again."
            )
        trainer.should_stop = True


def _number(value: float) -> Any:
    """A float for JSON: finite values as they are, others as ``"nan"``, ``"inf"``, ``"-inf"``."""
    return value if math.isfinite(value) else str(value)
