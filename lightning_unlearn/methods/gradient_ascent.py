"""GA: gradient ascent on the forget set."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from lightning_unlearn.methods.base import Batch, UnlearningMethod
from lightning_unlearn.registry import register


@register(
    "gradient_ascent",
    kind="method",
    cost="1 F/B on a D_f batch",
    class_labels=False,
    paper="Thudi et al. 2022; Graves et al. 2021 (NegGrad); OPTML GA baseline",
)
class GradientAscent(UnlearningMethod):
    """Gradient ascent (GA / NegGrad): maximise the loss on D_f.

    Update rule: ``theta <- theta + lr * grad CE(theta; x_f, y_f)`` (minimise ``-CE``).
    Needs only D_f (retain-free). The loss is unbounded: few epochs, small lr.

    Defaults: SGD lr 1e-3, momentum 0.9, weight decay 0 (OPTML's CIFAR-10 recipe is lr 1e-4,
    5 epochs, which on small data forgets nothing; 1e-3 with 5 epochs is our default, see the
    README table). Cost per step: one forward/backward on a forget batch.
    Other arguments: see :class:`UnlearningMethod`.
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget",)
    default_epoch_split: ClassVar[str] = "forget"

    def __init__(self, model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, lr=lr, weight_decay=weight_decay, **kwargs)

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch["forget"]
        forget_ce = self.cross_entropy(self.model(x), y)
        return -forget_ce, {"forget_ce": forget_ce.detach()}
