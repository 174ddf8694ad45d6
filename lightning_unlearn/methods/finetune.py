"""FT: fine-tune on the retained data only."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from lightning_unlearn.methods.base import Batch, UnlearningMethod
from lightning_unlearn.registry import register


@register(
    "finetune",
    kind="method",
    cost="1 F/B on a D_r batch",
    paper="Warnecke et al. 2023 / Jia et al., NeurIPS 2023 (OPTML Unlearn-Sparse FT baseline)",
)
class FineTune(UnlearningMethod):
    """Fine-tuning (FT): continue training the original model on D_r only, relying on
    catastrophic forgetting of D_f.

    Update rule: ``theta <- theta - lr * grad CE(theta; x_r, y_r)``.

    Defaults (OPTML Unlearn-Sparse, CIFAR-10 ResNet-18): SGD lr 0.01, momentum 0.9, weight
    decay 5e-4, 10 epochs (set ``max_epochs`` on the Trainer). Needs D_r only (retain-free: no;
    forget-free: yes), so it also runs on a plain datamodule of retained data.
    Cost per step: one forward/backward on a retain batch.
    Other arguments: see :class:`UnlearningMethod`.
    """

    unlearning_inputs: ClassVar[tuple[str, ...]] = ("retain",)
    default_epoch_split: ClassVar[str] = "retain"

    def unlearning_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch["retain"]
        loss = self.cross_entropy(self.model(x), y)
        return loss, {"retain_ce": loss.detach()}
