"""Bad Teacher: distil a competent teacher on retained data and an incompetent one on D_f."""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_unlearn.methods.base import Batch
from lightning_unlearn.methods.teachers import TeacherStudentMethod, distillation_kl
from lightning_unlearn.models.classifier import OptimizerCallable
from lightning_unlearn.models.network import check_logits, copy_network, reinitialise, sample_like
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_float, check_fraction, check_int


def bad_teacher_loss(
    student_forget: Tensor,
    student_retain: Tensor,
    incompetent_forget: Tensor,
    competent_retain: Tensor,
    forget_share: float,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Bad Teacher's objective on a forget batch and a retain batch (all arguments are logits).

    ``loss = forget_share * mean_f KL(p_d || q) + (1 - forget_share) * mean_r KL(p_c || q)``
    with ``q = softmax(z_s / T)``, ``p_d = softmax(z_incompetent / T)`` on forget samples and
    ``p_c = softmax(z_competent / T)`` on retain samples: the expected loss of one of the
    reference's mixed batches, in which a sample is a forget sample with probability
    ``forget_share``. An empty retain batch contributes nothing.

    Returns:
        ``(loss, forget_kl, retain_kl)`` (the two batch means; ``retain_kl`` is 0 when empty).
    """

    def kl_to(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
        target = F.softmax(teacher_logits.float() / temperature, dim=1)
        return distillation_kl(student_logits, target, temperature).mean()

    forget_kl = kl_to(incompetent_forget, student_forget)
    if student_retain.shape[0] == 0:
        return forget_share * forget_kl, forget_kl, forget_kl.new_zeros(())
    retain_kl = kl_to(competent_retain, student_retain)
    return forget_share * forget_kl + (1.0 - forget_share) * retain_kl, forget_kl, retain_kl


@register(
    "bad_teacher",
    kind="method",
    cost="1 F/B over D_f + retained samples, 1 teacher F per sample",
    paper="Chundawat, Tarun, Mandal, Kankanhalli, AAAI 2023 (vikram2000b/bad-teaching-unlearning)",
)
class BadTeacher(TeacherStudentMethod):
    """Bad Teacher / incompetent-teacher unlearning (Chundawat et al., AAAI 2023).

    Two frozen teachers: the competent teacher is the original model, the incompetent one a
    randomly initialised network (by default a copy of the architecture re-initialised with
    ``incompetent_seed``). The student (``self.model``) starts from the original and is
    distilled, at temperature ``T``, towards the incompetent teacher on D_f and towards the
    competent one on a random ``retain_fraction`` of D_r:
    ``loss = KL(p_target || softmax(z_s / T))`` per sample (summed over classes), ``p_target =
    softmax(T_d(x) / T)`` for forget samples and ``softmax(T_c(x) / T)`` for retain samples.

    Data arrangement: the reference shuffles D_f (label 1) with a fixed random 30 % of D_r
    (label 0) and averages the loss over mixed batches. Here an epoch is one pass over D_f
    (paired batches, ``epoch_split="forget"``); each step uses its forget batch and the first
    ``m_t`` samples of its retain batch, with ``m_t`` allocated in proportion to the forget
    samples so that an epoch sees ``floor(retain_fraction * |D_r|)`` retain samples (distinct
    while the epoch's retain batches, steps x ``batch_size``, do not exceed |D_r|; a fresh random
    subset each epoch, where the reference keeps one: the same thing for its single epoch). The
    loss weighs the two parts by the reference's forget share
    ``pi = |D_f| / (|D_f| + floor(retain_fraction * |D_r|))``: see :func:`bad_teacher_loss`.
    When the datamodule's retain batches are smaller than ``m_t`` the whole retain batch is used
    (same expected loss, fewer retain samples per epoch) and a warning names the batch size that
    avoids it. The reference's ``F.kl_div`` default averages over classes too (a constant factor
    ``1 / C``, immaterial under Adam); here KL is the textbook per-sample sum.

    Defaults (reference code, also in the SSD repo): Adam lr 1e-4, ``T = 1``, 30 % of D_r,
    1 epoch, batches of 256. ``lr`` and ``weight_decay`` configure that Adam; pass ``optimizer``
    for anything else (e.g. SGD). Cost per step: one student forward/backward over the forget
    and retain samples plus one teacher forward per sample (the incompetent teacher on forget
    samples, the competent one on retain samples; the reference runs both teachers on all).
    Memory: two extra copies of the network (the teachers; not checkpointed). Data: D_f, D_r.
    The ZRF score (:func:`lightning_unlearn.metrics.functional.zrf_score`) compares the
    unlearned model with :attr:`incompetent` on D_f.

    Args:
        incompetent: the incompetent teacher (a network with the same number of logits); default
            a copy of ``model`` with every submodule's ``reset_parameters`` called.
        incompetent_seed: seed of that re-initialisation.
        temperature: distillation temperature ``T`` (> 0).
        retain_fraction: fraction of D_r distilled from the competent teacher per epoch, in (0, 1].
        lr: Adam learning rate (ignored when ``optimizer`` is given).
        weight_decay: Adam weight decay (ignored when ``optimizer`` is given).
        Other arguments: see :class:`~lightning_unlearn.methods.UnlearningMethod`.

    Raises:
        ValueError: for ``temperature <= 0``, ``retain_fraction`` outside (0, 1] or an
            ``incompetent`` that is not an ``nn.Module``; at fit start, when ``incompetent`` does
            not return logits for the data's classes or the retained subset would be empty.

    Example::

        >>> from lightning_unlearn.models import SmallCNN
        >>> method = BadTeacher(SmallCNN(in_channels=1, num_classes=10), retain_fraction=0.3)
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "forget"

    def __init__(
        self,
        model: nn.Module,
        incompetent: Optional[nn.Module] = None,
        incompetent_seed: int = 0,
        temperature: float = 1.0,
        retain_fraction: float = 0.3,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        optimizer: Optional[OptimizerCallable] = None,
        **kwargs: Any,
    ) -> None:
        temperature = check_float(temperature, "temperature", minimum=0.0, open_minimum=True, hint="e.g. temperature=1.0")
        retain_fraction = check_fraction(retain_fraction, "retain_fraction", hint="e.g. 0.3 (30 % of D_r)")
        incompetent_seed = check_int(incompetent_seed, "incompetent_seed")
        if "epoch_split" in kwargs:
            raise ValueError("BadTeacher's epoch is one pass over D_f (with its share of D_r): drop `epoch_split`.")
        if "momentum" in kwargs:
            raise ValueError("BadTeacher trains with Adam (no momentum argument): drop `momentum`, or pass `optimizer=`.")
        if incompetent is not None and not isinstance(incompetent, nn.Module):
            raise ValueError(
                f"`incompetent` must be an nn.Module returning logits (or None for a re-initialised copy of"
                f" `model`), got {type(incompetent).__name__}."
            )
        # The base records every __init__ argument as a hyper-parameter: keep the network out of them.
        given_incompetent, incompetent = incompetent, None
        adam = functools.partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)
        super().__init__(
            model, lr=lr, momentum=0.0, weight_decay=weight_decay, optimizer=optimizer or adam, epoch_split="forget", **kwargs
        )
        self.save_hyperparameters(ignore=["model", "incompetent", "optimizer", "lr_scheduler", "momentum"])
        self.temperature, self.retain_fraction = temperature, retain_fraction
        self.add_teacher("competent", self.model)
        if given_incompetent is None:
            given_incompetent = reinitialise(copy_network(self.model), incompetent_seed)
        self.add_teacher("incompetent", given_incompetent)
        # Set at fit start from the data: |D_f| / (|D_f| + subset), and (subset, |D_f|, forget batch size).
        self.forget_share: Optional[float] = None
        self._allocation = (0, 1, 1)

    @property
    def incompetent(self) -> nn.Module:
        """The frozen incompetent (random) teacher."""
        return self._teachers["incompetent"]

    @property
    def competent(self) -> nn.Module:
        """The frozen competent teacher (the original model)."""
        return self._teachers["competent"]

    def setup(self, stage: str) -> None:
        super().setup(stage)  # checks run here, before any callback changes a weight
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule  # type: ignore[attr-defined]
        x, _ = next(iter(datamodule.forget_dataloader()))
        check_logits(self.incompetent, sample_like(self.incompetent, x[:2]), datamodule.num_classes, "incompetent")
        forget_size = len(datamodule.forget_indices)
        subset = int(self.retain_fraction * len(datamodule.retain_indices))
        if subset == 0:
            raise ValueError(
                f"`retain_fraction`={self.retain_fraction} of {len(datamodule.retain_indices)} retained samples is"
                " empty: raise retain_fraction."
            )
        self.forget_share = forget_size / (forget_size + subset)
        self._allocation = (subset, forget_size, datamodule.forget_batch_size)
        needed = math.ceil(subset * min(datamodule.forget_batch_size, forget_size) / forget_size)
        if datamodule.batch_size < needed:
            rank_zero_warn(
                f"BadTeacher: each forget batch of {datamodule.forget_batch_size} goes with up to {needed} of the"
                f" {subset} retained samples (retain_fraction={self.retain_fraction}), but retain batches hold"
                f" {datamodule.batch_size}: the loss keeps its weights, yet an epoch sees fewer retained samples."
                f" Set the datamodule's batch_size >= {needed} or lower its forget_batch_size."
            )

    def retain_count(self, batch_idx: int, forget_batch: int) -> int:
        """Retained samples that go with forget batch ``batch_idx`` (of ``forget_batch`` samples):
        ``floor(rho * seen_after) - floor(rho * seen_before)`` with ``rho = subset / |D_f|``, so an
        epoch's counts add up to the subset size."""
        subset, forget_size, batch_size = self._allocation
        before = batch_idx * batch_size
        return (subset * (before + forget_batch)) // forget_size - (subset * before) // forget_size

    def training_step(self, batch: Any, batch_idx: int) -> Optional[Tensor]:
        splits = self._as_splits(batch)
        x_r, y_r = splits["retain"]
        keep = self.retain_count(batch_idx, len(splits["forget"][0]))
        return super().training_step({"forget": splits["forget"], "retain": (x_r[:keep], y_r[:keep])}, batch_idx)

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Union[Tensor, float]]]:
        if self.forget_share is None:
            raise ValueError("BadTeacher's loss weights come from the data sizes: call it within trainer.fit.")
        x_f, x_r = batch["forget"][0], batch["retain"][0]
        student_f, student_r = self.forward_splits(batch)
        loss, forget_kl, retain_kl = bad_teacher_loss(
            student_f,
            student_r,
            self.teacher_logits("incompetent", x_f),
            self.teacher_logits("competent", x_r),
            self.forget_share,
            self.temperature,
        )
        logs: dict[str, Union[Tensor, float]] = {
            "forget_kl": forget_kl.detach(),
            "retain_kl": retain_kl.detach(),
            "retain_samples": float(len(x_r)),
        }
        return loss, logs
