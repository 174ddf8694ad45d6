"""RL: train the forget set towards random wrong labels while keeping the retain set."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lightning_unlearn.functional.labels import random_labels
from lightning_unlearn.methods.base import Batch, UnlearningMethod
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_bool, check_float, check_int


@register(
    "random_label", kind="method", cost="1 F/B on paired D_f + D_r batches",
    paper="Golatkar et al., CVPR 2020; Fan et al., ICLR 2024 (SalUn = RL + SaliencyMask)",
)
class RandomLabel(UnlearningMethod):
    """Random labelling (RL), the unlearning objective of SalUn (Fan et al., ICLR 2024).

    Update rule, per step on a forget batch paired with a retain batch:
    ``loss = CE(x_f, y') + alpha * CE(x_r, y_r)`` with ``y'`` drawn uniformly from the classes
    other than ``y_f`` (the paper's ``y' != y``; ``exclude_true_label=False`` draws from all
    classes like the reference code). The OPTML CIFAR-10 code takes separate forget and retain
    steps; pairing them in one step is equivalent in expectation with ``alpha = 1``.
    An epoch is one pass over D_r with the forget set cycled (``epoch_split="forget"`` for one
    pass over D_f: cheaper, but on random forgetting the 1:1 mix of random and true labels
    damages retain accuracy).

    Defaults (SalUn README, CIFAR-10 ResNet-18, 10 % random forgetting): SGD lr 0.013,
    momentum 0.9, weight decay 5e-4, 10 epochs, ``alpha = 1``.
    Cost per step: one forward/backward over the concatenated forget and retain batches.

    Args:
        alpha: weight of the retain cross-entropy.
        exclude_true_label: never draw the true label as the random label.
        seed: seed of the random labels; step ``t`` draws from a generator seeded by
            ``(seed, t)``, so a resumed run draws the same labels as an uninterrupted one.
        Other arguments: see :class:`UnlearningMethod`.
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "retain"

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1.0,
        exclude_true_label: bool = True,
        seed: int = 0,
        lr: float = 0.013,
        **kwargs: Any,
    ) -> None:
        alpha = check_float(alpha, "alpha", minimum=0.0, hint="the weight of the retain cross-entropy, e.g. 1.0")
        exclude_true_label = check_bool(exclude_true_label, "exclude_true_label")
        seed = check_int(seed, "seed")
        super().__init__(model, lr=lr, **kwargs)
        self.alpha, self.exclude_true_label, self.seed = alpha, exclude_true_label, seed

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits_f, logits_r = self.forward_splits(batch)
        y_f = batch["forget"][1]
        generator = torch.Generator(y_f.device).manual_seed(self.seed * 1_000_003 + self.global_step)
        random_y = random_labels(y_f, logits_f.shape[1], self.exclude_true_label, generator)
        forget_ce = self.cross_entropy(logits_f, random_y)
        retain_ce = self.cross_entropy(logits_r, batch["retain"][1])
        return forget_ce + self.alpha * retain_ce, {"forget_random_ce": forget_ce.detach(), "retain_ce": retain_ce.detach()}
