"""Retrain: re-initialise and train on the retained data only (the gold standard)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lightning_unlearn.methods.finetune import FineTune
from lightning_unlearn.models.classifier import LRScheduler, OptimizerCallable
from lightning_unlearn.registry import register


@register(
    "retrain", kind="method", retrain_free=False, cost="1 F/B on a D_r batch, full training",
    paper="exact unlearning baseline (every paper's reference)",
)
class Retrain(FineTune):
    """Retrain from scratch on D_r: the model every unlearning metric is compared against.

    A copy of the network gets freshly initialised parameters (every submodule's
    ``reset_parameters``, seeded by ``init_seed``) and is trained with cross-entropy on D_r.

    Defaults (OPTML, CIFAR-10 ResNet-18): SGD lr 0.1, momentum 0.9, weight decay 5e-4; the
    papers train 160-182 epochs (set ``max_epochs``; pair with a cosine or step schedule).
    Cost: a full training run on D_r. ``inplace`` is not offered: retraining never touches the
    user's model. Other arguments: see :class:`UnlearningMethod`.

    Args:
        init_seed: seed of the re-initialisation (``None`` draws from the global RNG).
    """

    def __init__(
        self,
        model: nn.Module,
        weights: Optional[str] = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: Optional[OptimizerCallable] = None,
        lr_scheduler: Optional[LRScheduler] = None,
        init_seed: Optional[int] = 0,
    ) -> None:
        super().__init__(model, weights, lr, momentum, weight_decay, optimizer, lr_scheduler)
        reinitialise(self.model, init_seed)


def reinitialise(model: nn.Module, seed: Optional[int] = None) -> nn.Module:
    """Resets every submodule that has ``reset_parameters`` (conv, linear, norm layers), in place."""
    state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    return model
