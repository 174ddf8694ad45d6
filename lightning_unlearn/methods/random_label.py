"""RL: train the forget set towards random labels while keeping the retain set."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.functional.labels import random_labels
from lightning_unlearn.methods.base import Batch, UnlearningMethod
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_bool, check_choice, check_float, check_int

#: ``RandomLabel(schedule=...)``: how an epoch passes over D_f and D_r.
Schedule = Literal["sequential", "shuffled", "paired"]
SCHEDULES = ("sequential", "shuffled", "paired")


@register(
    "random_label",
    kind="method",
    cost="1 F/B per batch; an epoch passes each D_f and D_r example once (paired: one D_f + one D_r batch per step)",
    paper="Golatkar et al., CVPR 2020; Fan et al., ICLR 2024 (SalUn = RL + SaliencyMask)",
)
class RandomLabel(UnlearningMethod):
    """Random labelling (RL), the unlearning objective of SalUn (Fan et al., ICLR 2024).

    Objective: cross-entropy of the forget examples towards random labels ``y'`` plus ``alpha``
    times the cross-entropy of the retain examples towards their labels. How an epoch passes over
    the data (``schedule``), as the reference ``Classification/unlearn/RL.py``
    (OPTML-Group/Unlearn-Saliency) does:

    * ``"sequential"`` (default; the reference's CIFAR-10 / SVHN path, the paper's headline
      setting): one shuffled pass of forget-only steps, ``loss = CE(x_f, y')``, then one shuffled
      pass of retain-only steps, ``loss = alpha * CE(x_r, y_r)``. Each example is seen once per
      epoch; an epoch is ``ceil(N_f / B_f) + ceil(N_r / B)`` optimiser steps.
    * ``"shuffled"`` (the reference's CIFAR-100 / TinyImageNet path): one shuffled pass over
      D_f ∪ D_r in mixed batches, ``loss = (sum_f CE(x_f, y') + alpha * sum_r CE(x_r, y_r)) /
      (n_f + n_r)`` over the batch (with ``alpha = 1``, the reference's single mean CE over the
      relabelled union). Each example once per epoch; ``ceil((N_f + N_r) / B)`` steps.
    * ``"paired"`` (this library's earlier default): every step pairs a forget batch with a retain
      batch, ``loss = CE(x_f, y') + alpha * CE(x_r, y_r)`` (one forward over both), an epoch being
      one pass over D_r with D_f cycled (``epoch_split="forget"``: one pass over D_f). This is
      *not* the reference: per epoch the forget term takes ``ceil(N_r / B) * B_f / N_f`` passes
      over D_f (about ``N_r / N_f``: 9 at 10 % random forgetting) in as many steps as the
      retain term, where the reference gives it ``N_f / B`` of ``(N_f + N_r) / B`` steps. To first
      order one paired epoch matches one sequential epoch only with the learning rate scaled
      by ``N_f / N_r`` and ``alpha = N_r / N_f``. It forgets faster and damages D_r more
      (digits, 10 % random, 2 epochs at lr 0.013: forget accuracy 0.83-0.88 and retain accuracy
      0.93-0.94, against 0.97-0.99 and 0.995-0.999 with the reference's schedule).

    Random labels (``exclude_true_label``): ``False`` (default) draws ``y'`` uniformly from all
    classes, as the reference code (``torch.randint(0, num_classes, target.shape)``; the CIFAR-100
    path's ``np.random.randint``), so ``y'`` equals the true label with probability 1/K; ``True``
    draws from the other classes only (the paper's ``y' != y``). Step ``t`` draws from a generator
    seeded by ``(seed, t)``, so a resumed run draws the same labels; the reference relabels the
    CIFAR-100 path's forget set once per epoch, which, each example being seen once per epoch,
    is the same distribution.

    Deviations from the reference: the order of examples follows the datamodule's seeded
    sampler; ``alpha`` (the reference's is 1) scales the retain loss; the reference's optional
    linear warm-up (``--warmup``, 0 by default) is not reproduced (use ``lr_scheduler``).
    Defaults (SalUn README, CIFAR-10 ResNet-18, 10 % random forgetting): SGD lr 0.013,
    momentum 0.9, weight decay 5e-4, 10 epochs, ``alpha = 1``, sequential schedule.
    Cost: one forward/backward per batch; per epoch one pass over D_f and one over D_r (paired:
    ``ceil(N_r / B)`` steps over a forget and a retain batch each). Data: D_f and D_r with labels.

    Args:
        alpha: weight of the retain cross-entropy. ``alpha = 0`` is the forget-only objective
            (e.g. under :class:`~lightning_unlearn.callbacks.GradientProjection`), served as paired
            batches (``epoch_split="forget"`` for one pass over D_f per epoch); the one-pass
            schedules refuse it (their retain steps would only decay the weights).
        schedule: ``"sequential"``, ``"shuffled"`` or ``"paired"`` (see above); default
            ``"sequential"``, or ``"paired"`` when ``epoch_split`` is given (it only applies there)
            or ``alpha = 0``.
        exclude_true_label: never draw the true label as the random label (default: the
            reference's draw over all classes).
        seed: seed of the random labels.
        Other arguments: see :class:`UnlearningMethod`.

    Raises:
        ValueError: ``alpha`` negative (or 0 with a one-pass schedule), an unknown ``schedule``,
            or ``epoch_split`` with a one-pass schedule.

    Example::

        trainer = L.Trainer(max_epochs=10)
        trainer.fit(RandomLabel(net, lr=0.013), datamodule=dm)   # the reference's CIFAR-10 recipe
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "retain"

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1.0,
        schedule: Optional[Schedule] = None,
        exclude_true_label: bool = False,
        seed: int = 0,
        lr: float = 0.013,
        **kwargs: Any,
    ) -> None:
        alpha = check_float(alpha, "alpha", minimum=0.0, hint="the weight of the retain cross-entropy, e.g. 1.0")
        exclude_true_label = check_bool(exclude_true_label, "exclude_true_label")
        seed = check_int(seed, "seed")
        given_split = kwargs.get("epoch_split") is not None
        schedule = check_choice(
            schedule if schedule is not None else ("paired" if given_split or alpha == 0.0 else "sequential"),
            "schedule",
            SCHEDULES,
            hint="'sequential' (forget pass, then retain pass: the reference), 'shuffled' (one pass over the union) or"
            " 'paired' (a forget and a retain batch per step).",
        )
        if schedule != "paired" and given_split:
            raise ValueError(
                f"`epoch_split` applies to the paired schedule only; schedule={schedule!r} passes each example once per"
                " epoch. Drop `epoch_split`, or pass schedule='paired'."
            )
        if schedule != "paired" and alpha == 0.0:
            raise ValueError(
                f"`alpha`=0 with schedule={schedule!r} would spend every retain step on weight decay alone: pass alpha > 0,"
                " or schedule='paired', epoch_split='forget' for the forget-only objective."
            )
        super().__init__(model, lr=lr, **kwargs)
        self.alpha, self.schedule, self.exclude_true_label, self.seed = alpha, schedule, exclude_true_label, seed

    @property
    def batch_plan(self) -> Optional[str]:
        """The one-pass plan the datamodule serves (``None``: paired batches)."""
        return None if self.schedule == "paired" else self.schedule

    def forget_targets(self, y_f: Tensor, num_classes: int) -> Tensor:
        """The random labels of this step's forget examples (generator seeded by ``(seed, step)``)."""
        generator = torch.Generator(y_f.device).manual_seed(self.seed * 1_000_003 + self.global_step)
        return random_labels(y_f, num_classes, self.exclude_true_label, generator)

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.schedule == "paired":
            logits_f, logits_r = self.forward_splits(batch)
            forget_ce = self.cross_entropy(logits_f, self.forget_targets(batch["forget"][1], logits_f.shape[1]))
            retain_ce = self.cross_entropy(logits_r, batch["retain"][1])
            return forget_ce + self.alpha * retain_ce, {"forget_random_ce": forget_ce.detach(), "retain_ce": retain_ce.detach()}
        names = tuple(name for name in ("forget", "retain") if name in batch)
        logits = dict(zip(names, self.forward_splits(batch, names)))
        targets = {name: batch[name][1] for name in names}
        weights = {"forget": 1.0, "retain": self.alpha}
        if "forget" in targets:
            targets["forget"] = self.forget_targets(targets["forget"], logits["forget"].shape[1])
        if len(names) == 1:  # a sequential step (or a one-split shuffled batch): the batch-mean CE, as the reference
            (name,) = names
            ce = self.cross_entropy(logits[name], targets[name])
            return weights[name] * ce, {LOG_KEYS[name]: ce.detach()}
        sums = {name: F.cross_entropy(logits[name], targets[name], reduction="sum") for name in names}
        total = sum(len(targets[name]) for name in names)
        loss = cast(Tensor, sum(weights[name] * sums[name] for name in names)) / total  # two splits: a tensor
        return loss, {LOG_KEYS[name]: sums[name].detach() / len(targets[name]) for name in names}


LOG_KEYS = {"forget": "forget_random_ce", "retain": "retain_ce"}
