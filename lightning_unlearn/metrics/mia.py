"""Accumulating OPTML "MIA-Efficacy" metric."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_unlearn.metrics.functional.mia import (
    Backend,
    _check_mia_args,
    _mia_efficacy_compute,
    _mia_efficacy_update,
    true_class_confidence,
)
from lightning_unlearn.metrics._svc import GammaType

Split = Literal["retain", "test", "forget"]
_SPLITS = ("retain", "test", "forget")


class MIAEfficacy(Metric):
    """OPTML "MIA-Efficacy" from logits of the retain, test and forget splits.

    ``update`` stores the true-class confidence of every sample, per split, in order of arrival;
    ``compute`` trains the RBF-SVC attack on the first ``len(test)`` retain confidences (members)
    and all test confidences (non-members) and returns the fraction of forget samples predicted
    non-member (see :func:`~lightning_unlearn.metrics.functional.mia_efficacy`). Feed the retain
    split in dataset order with ``shuffle=False`` and test-time transforms, as the reference does.

    Only ``N`` floats per sample are kept. Under DDP the per-rank lists are concatenated rank by
    rank, so "the first ``len(test)`` retain rows" then means the first rows of that concatenation.

    Call ``update`` (or the module call, which only updates and returns ``None``): the metric is
    undefined on a single batch.

    Args:
        backend: ``"torch"`` (native solver on the metric's device) or ``"sklearn"`` (CPU, exact
            OPTML parity).
        C: SVC ``C`` (OPTML: 3).
        gamma: SVC ``gamma`` (OPTML: ``"auto"``).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: on an unknown ``backend``, ``C <= 0`` or an invalid ``gamma``.

    Example:
        >>> import torch
        >>> metric = MIAEfficacy()
        >>> member = torch.tensor([[4.0, 0.0]] * 6)
        >>> non_member = torch.tensor([[0.5, 0.0], [0.0, 0.5], [0.2, 0.0], [0.0, 0.2], [0.1, 0.0], [0.0, 0.0]])
        >>> y = torch.zeros(6, dtype=torch.long)
        >>> metric.update(member, y, split="retain")
        >>> metric.update(non_member, y, split="test")
        >>> metric.update(torch.tensor([[4.0, 0.0], [0.0, 0.3]]), torch.tensor([0, 0]), split="forget")
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    retain_conf: list[Tensor]
    test_conf: list[Tensor]
    forget_conf: list[Tensor]

    def __init__(
        self,
        backend: Backend = "torch",
        C: float = 3.0,
        gamma: GammaType = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_mia_args(backend, C, gamma)
        self.backend = backend
        self.C = C
        self.gamma = gamma
        for split in _SPLITS:
            self.add_state(f"{split}_conf", default=[], dist_reduce_fx="cat")

    def update(self, logits: Tensor, target: Tensor, split: Split) -> None:
        """Store the true-class confidences of a batch of one split.

        Args:
            logits: ``(N, C)`` logits (any floating dtype).
            target: ``(N,)`` integer labels.
            split: ``"retain"``, ``"test"`` or ``"forget"``.

        Raises:
            ValueError: on an unknown ``split`` or bad ``logits``/``target``.
        """
        if split not in _SPLITS:
            raise ValueError(f"`split` must be one of {_SPLITS}, got {split!r}.")
        getattr(self, f"{split}_conf").append(true_class_confidence(logits, target))

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Same as :meth:`update`; a per-batch value does not exist for this metric."""
        self.update(*args, **kwargs)

    def compute(self) -> Tensor:
        """MIA-Efficacy over everything seen since the last reset.

        Raises:
            ValueError: if a split received no samples.
        """
        feats = {}
        for split in _SPLITS:
            state = getattr(self, f"{split}_conf")
            if (isinstance(state, list) and len(state) == 0) or (isinstance(state, Tensor) and state.numel() == 0):
                raise ValueError(
                    f"MIAEfficacy has no {split!r} samples; call `update(logits, target, split={split!r})` "
                    "for every split before `compute()`."
                )
            feats[split] = dim_zero_cat(state)
        x_attack, y_attack, x_forget = _mia_efficacy_update(feats["retain"], feats["test"], feats["forget"])
        return _mia_efficacy_compute(x_attack, y_attack, x_forget, backend=self.backend, C=self.C, gamma=self.gamma)
