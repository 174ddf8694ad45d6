"""Per-sample metric states gathered by position: the shared machinery of every audit metric.

A :class:`PositionalMetric` keeps, for each split it knows, one list state per named column
(one float per sample, or a flattened row of ``d`` floats for feature columns) and two position
lists. ``update(..., index=)`` appends a batch; :meth:`PositionalMetric.columns` returns every
column of a split in index order with each position once, after the ranks' states were gathered
(``sync_on_compute``). The value therefore depends on the samples alone — not on how batches
were spread over ranks, nor on a ``DistributedSampler``'s padding — which is how
:class:`~lightning_unlearn.metrics.MIAEfficacy` is exact under DDP too.

Every state is stored in the metric's float dtype: torchmetrics gathers the list of a rank that
saw no sample as an empty tensor of that dtype, which must match the other ranks' tensors.
Positions are kept as two exact floats ``(p // 2**23, p % 2**23)``; labels as floats (exact below
2**24).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

_INDEX_BASE = 2**23
_INDEX_LIMIT = 2**46


def check_index(index: Optional[Tensor], count: int) -> None:
    """Raises a ``ValueError`` unless ``index`` is ``None`` or an integer ``(count,)`` tensor of
    positions in ``[0, 2**46)``."""
    if index is None:
        return
    if not isinstance(index, Tensor) or index.ndim != 1 or index.is_floating_point() or index.dtype == torch.bool:
        raise ValueError("`index` must be an integer (N,) tensor of positions in the split, e.g. torch.arange(start, start + N).")
    if index.shape[0] != count:
        raise ValueError(f"`index` has {index.shape[0]} positions for {count} samples: give one per sample.")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= _INDEX_LIMIT):
        raise ValueError(f"`index` positions must lie in [0, 2**46), got {int(index.min())}..{int(index.max())}.")


def in_index_order(index: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """``values`` (rows aligned with ``index``) sorted by ``index``, each position once (the first
    of repeated positions: a ``DistributedSampler`` pads a split by repeating samples, which carry
    identical values). Returns ``(sorted unique index, *values)``."""
    order = torch.sort(index, stable=True).indices
    index = index[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return (index[keep], *(v[order][keep] for v in values))


def _empty(state: Any) -> bool:
    return (isinstance(state, list) and len(state) == 0) or (isinstance(state, Tensor) and state.numel() == 0)


class PositionalMetric(Metric):
    """Base class: per-split, per-sample columns gathered by position.

    Subclasses declare ``SPLITS`` (the split names ``update`` accepts) and ``COLUMNS`` (the column
    names of each sample), call :meth:`_append` from ``update``, and read :meth:`columns` in
    ``compute``. A column may hold a row of ``d`` values per sample (features): it is stored
    flattened and reshaped on reading (``d`` = values / positions).

    Without ``index`` the samples count in order of arrival (rank after rank under DDP); use one
    convention per split.
    """

    is_differentiable = False
    full_state_update = False
    SPLITS: Sequence[str] = ()
    COLUMNS: Sequence[str] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for split in self.SPLITS:
            for column in self.COLUMNS:
                self.add_state(f"{split}__{column}", default=[], dist_reduce_fx="cat")
            self.add_state(f"{split}__index_high", default=[], dist_reduce_fx="cat")
            self.add_state(f"{split}__index_low", default=[], dist_reduce_fx="cat")

    def _check_split(self, split: str) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"`split` must be one of {tuple(self.SPLITS)}, got {split!r}.")

    def _append(self, split: str, values: Mapping[str, Tensor], index: Optional[Tensor]) -> None:
        """Stores one batch of ``split``: ``values`` maps every column to ``(N,)`` or ``(N, d)``."""
        self._check_split(split)
        count = next(iter(values.values())).shape[0]
        check_index(index, count)
        name = type(self).__name__
        seen = sum(int(c.numel()) for c in getattr(self, f"{split}__{self.COLUMNS[0]}"))
        indexed = sum(int(c.numel()) for c in getattr(self, f"{split}__index_low"))
        if index is not None and seen and not indexed:
            raise ValueError(f"{name}: the {split!r} split got updates without `index` before: give `index` always or never.")
        if index is None and indexed:
            raise ValueError(f"{name}: the {split!r} split got updates with `index` before: give `index` always or never.")
        for column in self.COLUMNS:
            value = values[column]
            if value.shape[0] != count:
                raise ValueError(f"{name}: column {column!r} has {value.shape[0]} rows for {count} samples.")
            getattr(self, f"{split}__{column}").append(value.detach().reshape(-1).to(device=self.device, dtype=self.dtype))
        if index is not None:
            index = index.to(device=self.device, dtype=torch.long)
            getattr(self, f"{split}__index_high").append(torch.div(index, _INDEX_BASE, rounding_mode="floor").to(self.dtype))
            getattr(self, f"{split}__index_low").append(torch.remainder(index, _INDEX_BASE).to(self.dtype))

    def has_samples(self, split: str) -> bool:
        """Whether ``split`` received any sample (after a sync: on any rank)."""
        return not _empty(getattr(self, f"{split}__{self.COLUMNS[0]}"))

    def columns(self, split: str) -> dict[str, Tensor]:
        """Every column of ``split`` in position order (``(N,)``, or ``(N, d)`` for row columns),
        plus ``"index"`` (the positions; ``arange(N)`` without ``index``).

        Raises:
            ValueError: the split received no sample.
        """
        first = getattr(self, f"{split}__{self.COLUMNS[0]}")
        if _empty(first):
            raise ValueError(
                f"{type(self).__name__} has no {split!r} samples; call `update(..., split={split!r})` before `compute()`."
            )
        low = getattr(self, f"{split}__index_low")
        flat = {c: dim_zero_cat(getattr(self, f"{split}__{c}")) for c in self.COLUMNS}
        if not _empty(low):
            index = dim_zero_cat(getattr(self, f"{split}__index_high")).long() * _INDEX_BASE + dim_zero_cat(low).long()
        else:
            index = None
        count = index.shape[0] if index is not None else None
        out = {}
        for column, value in flat.items():
            rows = count if count is not None else flat[self.COLUMNS[0]].shape[0]
            width = value.numel() // max(rows, 1)
            out[column] = value.reshape(rows, width) if width != 1 else value
        if index is None:  # arrival order (count is None too); a first column of rows tells the count
            count = out[self.COLUMNS[0]].shape[0]
            index = torch.arange(count, device=self.device)
        for column, value in out.items():
            if value.shape[0] != count:
                raise ValueError(
                    f"{type(self).__name__}: {value.shape[0]} rows of {column!r} for {count} positions in"
                    f" the {split!r} split; give `index` with every update."
                )
        index, *values = in_index_order(index.to(self.device), *out.values())
        return {"index": index, **dict(zip(out, values))}
