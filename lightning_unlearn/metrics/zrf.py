"""Accumulating ZRF (zero retrain forgetting) score."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_unlearn.metrics.functional.zrf import _check_log_base, _zrf_compute, _zrf_update


class ZRFScore(Metric):
    """ZRF score (Chundawat et al., AAAI 2023): ``1 - mean_i JS(M(x_i), T_d(x_i))`` over the
    forget set, with the textbook Jensen-Shannon divergence; see
    :mod:`lightning_unlearn.metrics.functional.zrf` for the normalisation.

    Feed it, batch by batch over D_f, the unlearned model's outputs and those of a randomly
    initialised model of the same architecture (e.g. ``BadTeacher.incompetent``).

    Args:
        from_logits: inputs are logits (softmax is applied); ``False`` for probabilities.
        log_base: logarithm base; 2 (default) gives ZRF in ``[0, 1]``, ``math.e`` in ``[1 - ln 2, 1]``.
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: for ``log_base <= 0`` or ``== 1``.

    Example:
        >>> import torch
        >>> metric = ZRFScore(from_logits=False)
        >>> metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
        >>> metric.update(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.5]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = True
    higher_is_better = True
    full_state_update = False

    js_sum: Tensor
    total: Tensor

    def __init__(self, from_logits: bool = True, log_base: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_log_base(log_base)
        self.from_logits, self.log_base = from_logits, log_base
        self.add_state("js_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, reference: Tensor) -> None:
        """Add a batch of ``(N, C)`` outputs of the unlearned and of the random model."""
        js_sum, total = _zrf_update(preds, reference, self.from_logits, self.log_base)
        self.js_sum += js_sum.to(self.js_sum)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """ZRF over everything seen since the last reset (NaN if nothing was seen)."""
        return _zrf_compute(self.js_sum, self.total)
