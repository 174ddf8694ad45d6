"""Accumulating OPTML "MIA-Efficacy" metric."""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_unlearn.metrics._svc import GammaType
from lightning_unlearn.metrics.functional.mia import (
    Backend,
    _check_mia_args,
    _mia_efficacy_compute,
    _mia_efficacy_update,
    true_class_confidence,
)

Split = Literal["retain", "test", "forget"]
_INDEX_BASE = 2**23  # positions p are stored as (p // base, p % base): each part exact in float32
_INDEX_LIMIT = 2**46
_SPLITS = ("retain", "test", "forget")


class MIAEfficacy(Metric):
    """OPTML "MIA-Efficacy" from logits of the retain, test and forget splits.

    ``update`` stores the true-class confidence of every sample, per split, in order of arrival;
    ``compute`` trains the RBF-SVC attack on the first ``len(test)`` retain confidences (members)
    and all test confidences (non-members) and returns the fraction of forget samples predicted
    non-member (see :func:`~lightning_unlearn.metrics.functional.mia_efficacy`). Feed the retain
    split in dataset order with ``shuffle=False`` and test-time transforms, as the reference does.

    Only one float (and, with ``index``, one integer) per sample is kept.

    **Order and DDP.** Pass ``index`` (each sample's position in its split) with every
    ``update``: ``compute`` then puts every split in index order and counts a position seen
    twice once, so the result does not depend on how batches were spread over ranks, nor on the
    padding a ``DistributedSampler`` adds; under DDP (``sync_on_compute=True``, the default) the
    ranks' states are gathered first. This is exact: the same samples give the same value on one
    process or on many. Without ``index`` the samples count in order of arrival, and under DDP
    the per-rank lists are concatenated rank by rank, so "the first ``len(test)`` retain rows"
    then means the first rows of that concatenation — and ranks that each saw the whole data
    would count every sample once per rank. Use one convention per split (all updates with
    ``index`` or none).

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

        With positions, the order of the updates (or of the ranks) does not matter:

        >>> metric = MIAEfficacy()
        >>> metric.update(member[3:], y[3:], split="retain", index=torch.arange(3, 6))
        >>> metric.update(member[:3], y[:3], split="retain", index=torch.arange(3))
        >>> metric.update(non_member, y, split="test", index=torch.arange(6))
        >>> metric.update(torch.tensor([[4.0, 0.0], [0.0, 0.3]]), torch.tensor([0, 0]), split="forget", index=torch.arange(2))
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    retain_conf: list[Tensor]
    test_conf: list[Tensor]
    forget_conf: list[Tensor]
    retain_index_high: list[Tensor]
    retain_index_low: list[Tensor]
    test_index_high: list[Tensor]
    test_index_low: list[Tensor]
    forget_index_high: list[Tensor]
    forget_index_low: list[Tensor]

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
            # Positions are kept as two exact float lists (p // 2**23, p % 2**23): under DDP torchmetrics
            # gathers the list of a rank that saw no sample of the split as an empty float tensor,
            # which must have the dtype of the other ranks' lists.
            self.add_state(f"{split}_index_high", default=[], dist_reduce_fx="cat")
            self.add_state(f"{split}_index_low", default=[], dist_reduce_fx="cat")

    def update(self, logits: Tensor, target: Tensor, split: Split, index: Optional[Tensor] = None) -> None:
        """Store the true-class confidences of a batch of one split.

        Args:
            logits: ``(N, C)`` logits (any floating dtype).
            target: ``(N,)`` integer labels.
            split: ``"retain"``, ``"test"`` or ``"forget"``.
            index: optional ``(N,)`` integer positions of the samples in their split (see above).

        Raises:
            ValueError: on an unknown ``split``, bad ``logits``/``target``/``index``, or mixing
                updates with and without ``index`` in one split.
        """
        if split not in _SPLITS:
            raise ValueError(f"`split` must be one of {_SPLITS}, got {split!r}.")
        conf = true_class_confidence(logits, target)
        indexed = sum(int(c.numel()) for c in getattr(self, f"{split}_index_low"))
        seen = sum(int(c.numel()) for c in getattr(self, f"{split}_conf"))
        if index is not None:
            if not isinstance(index, Tensor) or index.ndim != 1 or index.is_floating_point() or index.dtype == torch.bool:
                raise ValueError(
                    "`index` must be an integer (N,) tensor of positions in the split, e.g. torch.arange(start, start + N)."
                )
            if index.shape[0] != conf.shape[0]:
                raise ValueError(f"`index` has {index.shape[0]} positions for {conf.shape[0]} samples: give one per sample.")
            if indexed != seen:
                raise ValueError(
                    f"MIAEfficacy: the {split!r} split got updates without `index` before: give `index` always or never."
                )
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= _INDEX_LIMIT):
                raise ValueError(f"`index` positions must lie in [0, 2**46), got {int(index.min())}..{int(index.max())}.")
            index = index.to(device=conf.device, dtype=torch.long)
            getattr(self, f"{split}_index_high").append(torch.div(index, _INDEX_BASE, rounding_mode="floor").to(self.dtype))
            getattr(self, f"{split}_index_low").append(torch.remainder(index, _INDEX_BASE).to(self.dtype))
        elif indexed:
            raise ValueError(f"MIAEfficacy: the {split!r} split got updates with `index` before: give `index` always or never.")
        getattr(self, f"{split}_conf").append(conf)

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
            conf = dim_zero_cat(state)
            high, low = getattr(self, f"{split}_index_high"), getattr(self, f"{split}_index_low")
            if (isinstance(low, list) and len(low) > 0) or (isinstance(low, Tensor) and low.numel() > 0):
                index = dim_zero_cat(high).long() * _INDEX_BASE + dim_zero_cat(low).long()
                conf = _in_index_order(conf, index.to(conf.device))
            feats[split] = conf
        x_attack, y_attack, x_forget = _mia_efficacy_update(feats["retain"], feats["test"], feats["forget"])
        return _mia_efficacy_compute(x_attack, y_attack, x_forget, backend=self.backend, C=self.C, gamma=self.gamma)


def _in_index_order(values: Tensor, index: Tensor) -> Tensor:
    """``values`` sorted by ``index``, each position once (the first of repeated positions: a
    ``DistributedSampler`` pads a split by repeating samples, which carry identical values)."""
    if index.shape[0] != values.shape[0]:
        raise ValueError(
            f"MIAEfficacy: {index.shape[0]} positions for {values.shape[0]} samples; give `index` with every update."
        )
    order = torch.sort(index, stable=True).indices
    index, values = index[order], values[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return values[keep]
