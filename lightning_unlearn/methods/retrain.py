"""Retrain: re-initialise and train on the retained data only (the gold standard)."""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from lightning_unlearn.methods.finetune import FineTune
from lightning_unlearn.models.network import reinitialise
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_int


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
    Cost: a full training run on D_r. ``inplace=True`` is refused: retraining never touches the
    user's model. Other arguments (forwarded by keyword): see :class:`UnlearningMethod`.

    Args:
        init_seed: seed of the re-initialisation (``None`` draws from the global RNG).
    """

    def __init__(self, model: nn.Module, init_seed: Optional[int] = 0, lr: float = 0.1, **kwargs: Any) -> None:
        if init_seed is not None:
            init_seed = check_int(init_seed, "init_seed", hint="an integer seed, or None to draw from the global RNG")
        if "inplace" in kwargs:
            raise ValueError("Retrain always trains a re-initialised copy (`inplace` would re-initialise your model object): drop `inplace`.")
        super().__init__(model, lr=lr, inplace=False, **kwargs)
        reinitialise(self.model, init_seed)
