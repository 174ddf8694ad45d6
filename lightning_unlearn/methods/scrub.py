"""SCRUB: a student moves away from the original (teacher) on D_f and stays close to it on D_r."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Optional, cast

import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from lightning_unlearn.methods.base import Batch
from lightning_unlearn.methods.teachers import TeacherStudentMethod, distillation_kl
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_float, check_int


def scrub_distance(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """SCRUB's ``d = T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, summed over classes and
    averaged over the batch (RepDistiller's ``DistillKL``)."""
    target = F.softmax(teacher_logits.float() / temperature, dim=1)
    return distillation_kl(student_logits, target, temperature).mean() * temperature**2


@register(
    "scrub",
    kind="method",
    cost="1 F/B + 1 teacher F per step (max-steps on D_f, then min-steps on D_r)",
    paper="Kurmanji, Triantafillou, Hayes, Triantafillou, NeurIPS 2023 (meghdadk/SCRUB)",
)
class SCRUB(TeacherStudentMethod):
    """SCRUB (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023).

    The teacher is a frozen copy of the original model; the student (``self.model``) starts from
    it. With ``d(x) = T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` (summed over classes,
    averaged over the batch):

    * max-step on a forget batch: ``loss = -d`` (move away from the teacher on D_f);
    * min-step on a retain batch: ``loss = alpha * d + gamma * CE(z_s, y)``.

    Schedule (the reference's ``train_distill`` loop): in each of the first ``msteps`` epochs a
    full pass of max-steps over D_f and a full pass of min-steps over D_r; later epochs take
    min-steps only. Here an epoch is one pass over D_r (paired batches from
    :class:`~lightning_unlearn.data.UnlearningDataModule`, ``epoch_split="retain"``); in a max
    epoch the forget halves of the first ``ceil(|D_f| / forget_batch_size)`` batches (the last one
    trimmed) form exactly one pass over D_f, and each of those batches takes its max-step and then
    its min-step. Step counts and data are those of the reference; the only difference is that
    the reference runs all max-steps before the first min-step. In min-only epochs the forget
    halves are loaded but unused. The phase is logged as ``train/phase`` (1 for a batch with a
    max-step, else 0; ``train/max_kl`` is the epoch mean of ``d`` over the max-steps) and held in
    :attr:`phase` (``"max"``/``"min"``) at every optimiser step.

    The reference's ``beta`` weighs an extra distillation term that is identically 0 for plain
    KD (``distill="kd"``, the paper's setting): it has no effect and is not offered.

    Defaults: the CIFAR-10 large-scale notebook (ResNet-18): SGD lr 5e-4, momentum 0.9, weight
    decay 5e-4, ``T = 4``, ``gamma = 0.99``, ``alpha = 0.001``, ``msteps = 2``, 3 epochs, forget
    batches of 512 and retain batches of 256 (set them on the datamodule). The small-scale
    notebooks use ``alpha = 0.5``, ``gamma = 1``, ``msteps = 3``, 5-10 epochs. LR decay at given
    epochs: pass ``lr_scheduler`` (e.g. ``MultiStepLR``, stepped once per epoch) or ``"cosine"``
    (stepped once per batch).

    Cost per optimiser step: one student forward/backward and one teacher forward (no gradient).
    Memory: one extra copy of the network (the teacher; not checkpointed). Data: D_f and D_r.

    Manual optimisation (two optimiser steps on some batches): Lightning rejects trainer-level
    gradient clipping (``gradient_clip_val``) and accumulation (``accumulate_grad_batches``).

    Args:
        alpha: weight of the distillation term of min-steps (>= 0).
        gamma: weight of the cross-entropy of min-steps (>= 0).
        temperature: distillation temperature ``T`` (> 0).
        msteps: number of leading epochs with max-steps (>= 0; 0 = distillation on D_r only).
        Other arguments: see :class:`~lightning_unlearn.methods.UnlearningMethod`.

    Raises:
        ValueError: for ``alpha < 0``, ``gamma < 0``, ``temperature <= 0`` or ``msteps < 0``; at
            fit start, when an epoch has fewer retain batches than the forget pass needs.

    Example::

        >>> from lightning_unlearn.models import SmallCNN
        >>> method = SCRUB(SmallCNN(in_channels=1, num_classes=10), msteps=2)
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "retain"

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 0.001,
        gamma: float = 0.99,
        temperature: float = 4.0,
        msteps: int = 2,
        lr: float = 5e-4,
        **kwargs: Any,
    ) -> None:
        alpha = check_float(alpha, "alpha", minimum=0.0, hint="the weight of the retain distillation term, e.g. 0.001")
        gamma = check_float(gamma, "gamma", minimum=0.0, hint="the weight of the retain cross-entropy, e.g. 0.99")
        temperature = check_float(temperature, "temperature", minimum=0.0, open_minimum=True, hint="e.g. temperature=4.0")
        msteps = check_int(msteps, "msteps", minimum=0, hint="the number of leading epochs with max-steps, e.g. 2")
        if "epoch_split" in kwargs:
            raise ValueError("SCRUB's epoch is one pass over D_r (its max-steps pass D_f within it): drop `epoch_split`.")
        super().__init__(model, lr=lr, epoch_split="retain", **kwargs)
        self.alpha, self.gamma, self.temperature, self.msteps = alpha, gamma, temperature, msteps
        self.automatic_optimization = False
        self.add_teacher("teacher", self.model)
        self.phase: Optional[Literal["max", "min"]] = None
        self._max_batches = 0  # forget batches in one pass over D_f (set at fit start)
        self._last_max_size = 0  # size of the last of them

    @property
    def teacher(self) -> nn.Module:
        """The frozen original model."""
        return self._teachers["teacher"]

    def setup(self, stage: str) -> None:
        super().setup(stage)  # checks run here, before any callback changes a weight
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule  # type: ignore[attr-defined]
        forget_size, batch = len(datamodule.forget_indices), datamodule.forget_batch_size
        self._max_batches = math.ceil(forget_size / batch)
        self._last_max_size = forget_size - (self._max_batches - 1) * batch
        epoch_batches = math.ceil(len(datamodule.retain_indices) / datamodule.batch_size)
        if self.msteps > 0 and self._max_batches > epoch_batches:
            raise ValueError(
                f"SCRUB's pass over D_f needs {self._max_batches} forget batches of {batch}, but an epoch has only"
                f" {epoch_batches} retain batches: raise the datamodule's `forget_batch_size` to at least"
                f" {math.ceil(forget_size / epoch_batches)} (or lower its `batch_size`)."
            )

    # ------------------------------------------------------------------ the two steps
    def max_loss(self, x_forget: Tensor) -> Tensor:
        """``-d`` on a forget batch."""
        return -scrub_distance(self.model(x_forget), self.teacher_logits("teacher", x_forget), self.temperature)

    def min_loss(self, x_retain: Tensor, y_retain: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``alpha * d + gamma * CE`` on a retain batch, with the terms to log."""
        logits = self.model(x_retain)
        kl = scrub_distance(logits, self.teacher_logits("teacher", x_retain), self.temperature)
        ce = self.cross_entropy(logits, y_retain)
        return self.alpha * kl + self.gamma * ce, {"kl": kl.detach(), "ce": ce.detach()}

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The min-step objective on the retain part of ``batch`` (SCRUB's max-steps are separate
        optimiser steps, taken in :meth:`training_step`)."""
        return self.min_loss(*batch["retain"])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        splits = self._as_splits(batch)
        max_step = self.current_epoch < self.msteps and batch_idx < self._max_batches
        if max_step:
            x_forget = splits["forget"][0]
            if batch_idx == self._max_batches - 1:
                x_forget = x_forget[: self._last_max_size]
            max_loss = self.max_loss(x_forget)
            self._optimizer_step("max", max_loss)
            # an epoch mean over the max-steps (a per-step value would be repeated on min-only steps)
            self.log("train/max_kl", -max_loss.detach(), on_step=False, on_epoch=True, batch_size=len(x_forget))
        loss, logs = self.unlearning_loss(splits)
        self._optimizer_step("min", loss)
        logged: dict[str, Any] = {"loss": loss.detach(), "phase": float(max_step), **logs}
        self.log_dict({f"train/{k}": v for k, v in logged.items()})
        self._step_schedulers("step")  # once per batch: "cosine" spans estimated_stepping_batches
        if self.trainer.is_last_batch or batch_idx + 1 >= self.trainer.num_training_batches:
            self._step_schedulers("epoch")
        return loss.detach()

    def _optimizer_step(self, phase: Literal["max", "min"], loss: Tensor) -> None:
        self.phase = phase
        optimizer = cast(LightningOptimizer, self.optimizers())  # the one optimiser of configure_optimizers
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def _step_schedulers(self, interval: Literal["step", "epoch"]) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == interval:
                scheduler = config.scheduler
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):  # a user factory's: steps on its monitor
                    scheduler.step(self.trainer.callback_metrics[str(config.monitor)])
                else:
                    scheduler.step()
