"""Accumulating top-1 accuracy and unlearning accuracy (UA) metrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_unlearn.metrics.functional.accuracy import (
    _accuracy_compute,
    _accuracy_update,
    _unlearning_accuracy_compute,
)


class ClassificationAccuracy(Metric):
    """Top-1 accuracy accumulated over batches, a fraction in ``[0, 1]``.

    Use one instance per split: retain accuracy (RA), test accuracy (TA), forget accuracy.

    Args:
        kwargs: forwarded to :class:`torchmetrics.Metric` (``sync_on_compute``, ...).

    Example:
        >>> import torch
        >>> metric = ClassificationAccuracy()
        >>> metric.update(torch.tensor([[2.0, 0.1], [0.3, 1.0]]), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([1, 1]), torch.tensor([1, 1]))
        >>> metric.compute()
        tensor(0.7500)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: ``(N, C)`` logits or probabilities, or ``(N,)`` integer labels.
            target: ``(N,)`` integer labels.

        Raises:
            ValueError: on mismatched or unsupported shapes or dtypes.
        """
        correct, total = _accuracy_update(preds, target)
        self.correct += correct.to(self.correct.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """Accuracy over everything seen since the last reset (NaN if nothing was seen)."""
        return _accuracy_compute(self.correct, self.total)


class UnlearningAccuracy(ClassificationAccuracy):
    """Unlearning accuracy ``UA = 1 - Acc(D_f)``, accumulated over forget-set batches.

    Higher means more forgetting; the target is the retrained model's UA, not 1.

    Example:
        >>> import torch
        >>> metric = UnlearningAccuracy()
        >>> metric.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 1]))
        >>> metric.compute()
        tensor(0.5000)
    """

    def compute(self) -> Tensor:
        """``1 - accuracy`` over everything seen since the last reset."""
        return _unlearning_accuracy_compute(self.correct, self.total)
