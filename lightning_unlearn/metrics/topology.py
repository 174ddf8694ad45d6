"""Accumulating sparse-topology metrics and the topology report of a pruned unlearning run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_unlearn.metrics.functional.topology import (
    MaskSource,
    _as_masks,
    _mask_iou_compute,
    _mask_iou_update,
    _sparsity_compute,
    _sparsity_update,
    mask_iou,
    sparsity,
    topology_gap,
)


class Sparsity(Metric):
    """Fraction of pruned entries over every mask given to ``update`` (e.g. one model's layers,
    or several models).

    Example:
        >>> import torch
        >>> metric = Sparsity()
        >>> metric.update({"a": torch.tensor([True, False, False, False])})
        >>> metric.update({"b": torch.tensor([True, True])})
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    pruned: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("pruned", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, masks: MaskSource) -> None:
        """Add kept-weight masks (see :func:`~lightning_unlearn.metrics.functional.sparsity`)."""
        for pruned, total in _sparsity_update(masks).values():
            self.pruned += pruned.to(self.pruned.device)
            self.total += total

    def compute(self) -> Tensor:
        return _sparsity_compute(self.pruned, self.total)


class MaskIoU(Metric):
    """Jaccard index of the kept weights of pairs of topologies, accumulated (intersection and
    union counts are summed, then divided).

    Example:
        >>> import torch
        >>> metric = MaskIoU()
        >>> metric.update({"w": torch.tensor([True, True, False, False])}, {"w": torch.tensor([True, False, True, False])})
        >>> metric.compute()
        tensor(0.3333)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    intersection: Tensor
    union: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("intersection", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("union", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, masks_a: MaskSource, masks_b: MaskSource) -> None:
        """Add a pair of topologies (see :func:`~lightning_unlearn.metrics.functional.mask_iou`)."""
        for intersection, union in _mask_iou_update(masks_a, masks_b).values():
            self.intersection += intersection.to(self.intersection.device)
            self.union += union.to(self.union.device)

    def compute(self) -> Tensor:
        return _mask_iou_compute(self.intersection, self.union)


def topology_report(
    holders: Sequence[Any],
    reference: Optional[MaskSource] = None,
    noise_references: Optional[Sequence[MaskSource]] = None,
) -> Optional[dict[str, Any]]:
    """The sparse-topology numbers of a run, from the objects holding its topology.

    A holder has ``topology_masks()`` (the current kept-weight masks, e.g.
    :class:`~lightning_unlearn.callbacks.MagnitudePruning`, :class:`~lightning_unlearn.callbacks.UnPruning`);
    one that also has ``topology_before()`` (the masks before it changed the topology) and
    ``topology_reference()`` (the retain-only reference, or ``None``) provides the topology gap,
    and one with ``topology_noise_references()`` (references from the same pipeline in other data
    orders) the noise floor and the gap closed.
    When several holders have masks of the same parameter, the kept set is their intersection.

    Args:
        holders: candidate holders, e.g. ``trainer.callbacks`` (those without ``topology_masks()`` are skipped).
        reference: the retain-only reference topology (masks, a model or a checkpoint path);
            default: the one the un-pruning holder was given.
        noise_references: references that differ from ``reference`` only in the data order;
            default: those the un-pruning holder was given.

    Returns:
        ``None`` when no holder has a topology; else ``{"sparsity": float,
        "sparsity_per_layer": {name: float}}`` plus, with an un-pruning holder,
        ``"iou_before_after"`` (IoU of the masks before and after it), and with a reference,
        ``"iou_unpruned"``, ``"iou_original"`` and ``"gain"``, and with noise references
        ``"before"``, ``"after"``, ``"floor"`` and ``"gap_closed"`` (see
        :func:`~lightning_unlearn.metrics.functional.topology_gap`).
    """
    holders = [h for h in holders if callable(getattr(h, "topology_masks", None))]
    current: dict[str, Tensor] = {}
    for holder in holders:
        for name, mask in _named(holder.topology_masks()).items():
            current[name] = current[name] & mask.to(current[name].device) if name in current else mask
    if not current:
        return None
    report: dict[str, Any] = {
        "sparsity": float(sparsity(current)),
        "sparsity_per_layer": {name: float(v) for name, v in sparsity(current, per_layer=True).items()},
    }
    for holder in holders:
        before = getattr(holder, "topology_before", None)
        before = before() if callable(before) else None
        if not before:
            continue
        report["iou_before_after"] = float(mask_iou(before, current))
        ref = reference if reference is not None else holder.topology_reference()
        noise = noise_references
        if noise is None:
            noise = holder.topology_noise_references() if callable(getattr(holder, "topology_noise_references", None)) else ()
        if ref is not None:
            report.update(topology_gap(current, before, ref, [n for n in noise or () if n is not None]))
        break
    return report


def _named(masks: MaskSource) -> dict[str, Tensor]:
    return _as_masks(masks, "topology_masks()") if masks else {}
