"""NegGrad+: descend on retain while ascending on forget, in one step."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from lightning_unlearn.methods.base import Batch, UnlearningMethod
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_fraction


@register(
    "neggrad_plus",
    kind="method",
    cost="1 F/B on paired D_r + D_f batches",
    paper="Kurmanji et al., NeurIPS 2023 (SCRUB paper's NegGrad+)",
)
class NegGradPlus(UnlearningMethod):
    """NegGrad+ (Kurmanji et al., 2023): each step pairs a retain batch with a forget batch.

    Update rule: ``loss = beta * CE(x_r, y_r) - (1 - beta) * CE(x_f, y_f)``, one backward.
    An epoch is one pass over D_r; the forget set is cycled.

    Defaults (SCRUB small-scale notebook): ``beta = 0.95``, SGD lr 0.01, momentum 0.9,
    weight decay 0, 10 epochs. Cost per step: one forward/backward over the concatenated batches.

    Args:
        beta: weight of the retain loss in [0, 1] (1 - beta weighs the forget ascent).
        Other arguments: see :class:`UnlearningMethod`.
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = "retain"

    def __init__(self, model: nn.Module, beta: float = 0.95, weight_decay: float = 0.0, **kwargs: Any) -> None:
        beta = check_fraction(beta, "beta", allow_zero=True, hint="e.g. beta=0.95 (mostly retain)")
        super().__init__(model, weight_decay=weight_decay, **kwargs)
        self.beta = beta

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits_f, logits_r = self.forward_splits(batch)
        retain_ce = self.cross_entropy(logits_r, batch["retain"][1])
        forget_ce = self.cross_entropy(logits_f, batch["forget"][1])
        loss = self.beta * retain_ce - (1.0 - self.beta) * forget_ce
        return loss, {"retain_ce": retain_ce.detach(), "forget_ce": forget_ce.detach()}
