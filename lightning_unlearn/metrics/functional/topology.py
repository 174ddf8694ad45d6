"""Sparse-topology metrics: sparsity, mask IoU (Jaccard) and the un-pruning "topology gap".

A *mask* marks the KEPT weights (``True`` = the weight survives pruning). Masks are given as a
mapping ``{parameter name: bool tensor}``, a sequence of bool tensors (named by position), the
path of a saved model (:func:`load_masks`) or a network, whose masks are read from its conv and
linear weights (:func:`masks_of`: an entry is kept when it is non-zero and, for weights carrying
a ``torch.nn.utils.prune`` reparametrisation, not masked out). Names are compared without the
``_orig`` suffix of ``torch.nn.utils.prune``, so a pruned-by-torch model and a plain sparse
model of the same architecture match.

The un-pruning paper (Xiao et al., arXiv 2507.18725) measures how far deleted data still shapes
a sparse model's topology; its public code (NKUShaw/SparseModels ``unlearn/mask_utils.py``)
computes the intersection and union of two binary masks. :func:`topology_gap` compares the mask
after un-pruning and the mask before it with a *reference*: the mask the same pruning pipeline
produces on a model trained on the retained data only.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Optional, Union, overload

import torch
from torch import Tensor, nn

# The torch.nn.utils.prune interop lives with the pruning core; the metrics read masks through it.
from lightning_unlearn.functional.masks import unpack_mask
from lightning_unlearn.functional.pruning import PRUNE_SUFFIX, canonical_name, prunable_weights, prune_reparametrisation

MaskSource = Union[Mapping[str, Tensor], Sequence[Tensor], nn.Module, str, os.PathLike]
#: Where a topology comes from (see :func:`resolve_topology`).
TopologySource = Union[str, os.PathLike, Mapping[str, Tensor], nn.Module, Callable[[nn.Module], Mapping[str, Tensor]]]
#: Key under which the mask callbacks store their masks in a Lightning checkpoint.
CHECKPOINT_MASKS = "lightning_unlearn_masks"


@torch.no_grad()
def masks_of(network: nn.Module) -> dict[str, Tensor]:
    """The kept-weight masks of the conv and linear weights of ``network``, by canonical name:
    ``weight != 0``, and ``weight_mask`` applied for ``torch.nn.utils.prune`` reparametrisations.

    Raises:
        ValueError: ``network`` has no conv or linear weight.
    """
    accept = prunable_weights(network)
    masks = {}
    for name, param in network.named_parameters():
        if not accept(name, param):
            continue
        kept = param.detach() != 0
        buffer = prune_reparametrisation(network, name)
        if buffer is not None:
            kept &= buffer.detach() != 0
        masks[canonical_name(name)] = kept
    if not masks:
        raise ValueError(f"{type(network).__name__} has no conv or linear weight to read a mask from; pass masks instead.")
    return masks


@torch.no_grad()
def weights_from_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The effective conv/linear-shaped weights (``...weight`` or ``...weight_orig`` tensors with
    two or more dimensions) of a state dict, by canonical name: ``torch.nn.utils.prune``'s
    ``weight_orig * weight_mask`` is applied. A Lightning checkpoint's ``state_dict`` and the
    ``model.`` prefix of our wrappers are unwrapped.

    Raises:
        ValueError: no such weight in ``state``.
    """
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if any(key.startswith("model.") for key in state):
        state = {key[len("model.") :]: value for key, value in state.items() if key.startswith("model.")}
    weights = {}
    for key, value in state.items():
        name = canonical_name(key)
        if not (isinstance(value, Tensor) and value.is_floating_point() and value.ndim >= 2 and name.endswith("weight")):
            continue
        prune_mask = state.get(name + "_mask") if key.endswith(PRUNE_SUFFIX) else None
        weights[name] = value * (prune_mask != 0) if isinstance(prune_mask, Tensor) else value
    if not weights:
        raise ValueError("The state dict holds no conv or linear weight (a `...weight` tensor with 2+ dimensions).")
    return weights


def masks_from_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Kept-weight masks of a saved model: the pruning masks recorded in a Lightning checkpoint by
    the mask callbacks that pin pruned weights at zero (``MagnitudePruning``, ``UnPruning``: their
    intersection, by canonical parameter name) when the checkpoint holds any, else the non-zero
    entries of :func:`weights_from_state_dict` (``torch.nn.utils.prune`` masks applied)."""
    recorded = _recorded_pruning_masks(state)
    if recorded:
        return recorded
    return {name: w != 0 for name, w in weights_from_state_dict(state).items()}


def _recorded_pruning_masks(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """The masks the zero-anchored mask callbacks saved in a Lightning checkpoint (intersected)."""
    holders = state.get(CHECKPOINT_MASKS) if isinstance(state, Mapping) else None
    masks: dict[str, Tensor] = {}
    for entry in (holders or {}).values():
        saved = entry.get("masks") if isinstance(entry, Mapping) else None
        if not isinstance(saved, Mapping) or not saved.get("anchor_zero"):
            continue  # value-anchored masks (saliency) say what may change, not what is pruned
        for name, packed, shape in zip(saved["names"], saved["masks"], saved["shapes"]):
            mask = unpack_mask(packed, shape)
            key = canonical_name(name)
            masks[key] = masks[key] & mask if key in masks else mask
    return masks


def load_masks(path: Union[str, os.PathLike]) -> dict[str, Tensor]:
    """Kept-weight masks of the model saved at ``path`` (a ``state_dict`` or Lightning checkpoint,
    read with ``weights_only=True``), see :func:`masks_from_state_dict`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no conv or linear weight.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No reference model at {path!r}: run the same pruning pipeline on a model trained on the retained"
            " data only (e.g. Retrain + MagnitudePruning) and save its checkpoint there."
        )
    return masks_from_state_dict(torch.load(path, map_location="cpu", weights_only=True))


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def resolve_topology(source: TopologySource, network: Optional[nn.Module] = None) -> dict[str, Tensor]:
    """A topology (kept-weight masks by canonical parameter name) from any of the places one lives.

    Args:
        source: ``"model"`` (the topology ``network`` carries: its zero conv/linear weights and
            ``torch.nn.utils.prune`` masks, :func:`masks_of`); a path to a saved model or Lightning
            checkpoint (:func:`load_masks`: the masks a ``MagnitudePruning``/``UnPruning`` run
            recorded, else the non-zero weights); a network (its :func:`masks_of`); a mapping
            ``{name: bool mask}``; a callable ``network -> mapping`` (called with ``network``), or
            the dotted import path of one (``"package.module.function"``, for YAML).
        network: the network ``"model"`` and callables read.

    Returns:
        ``{canonical parameter name: bool mask}`` (``True`` = kept), detached.

    Raises:
        ValueError: an unknown string, a callable returning no masks, ``"model"`` or a callable
            without ``network``.
        FileNotFoundError: a path that does not exist.

    Example::

        >>> net = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     net.weight[0, 0] = 0.0
        >>> resolve_topology("model", net)["weight"].tolist()
        [[False, True], [True, True]]
    """
    if isinstance(source, str) and source == "model":
        if network is None:
            raise ValueError("mask='model' reads the topology of a network: pass the network.")
        return masks_of(network)
    if isinstance(source, nn.Module):
        return masks_of(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path) or not _DOTTED.match(path):
            return load_masks(path)
        module_name, _, attribute = path.rpartition(".")
        try:
            source = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as err:
            raise ValueError(
                f"mask={path!r} is neither 'model', an existing checkpoint nor an importable 'package.module.function' ({err})."
            ) from None
    if isinstance(source, Mapping):
        return _as_masks(source, "mask")
    if callable(source):
        if network is None:
            raise ValueError("A mask callable is called with the network: pass the network.")
        masks = source(network)
        if not isinstance(masks, Mapping) or not masks:
            raise ValueError(f"The mask callable {source!r} must return a non-empty mapping parameter name -> bool mask.")
        return _as_masks(masks, "mask")
    raise ValueError(
        f"`mask` must be 'model', a checkpoint path, a mapping name -> bool mask, a network or a callable, got {type(source).__name__}."
    )


def _as_masks(source: MaskSource, argument: str) -> dict[str, Tensor]:
    if isinstance(source, nn.Module):
        return masks_of(source)
    if isinstance(source, (str, os.PathLike)):
        return load_masks(source)
    if isinstance(source, Mapping):
        items = list(source.items())
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        items = [(str(i), m) for i, m in enumerate(source)]
    else:
        raise ValueError(
            f"`{argument}` must be a mapping name -> bool mask, a sequence of masks, a model path or a network,"
            f" got {type(source).__name__}."
        )
    masks = {}
    for name, mask in items:
        if not isinstance(mask, Tensor):
            raise ValueError(f"`{argument}`[{name!r}] must be a tensor, got {type(mask).__name__}.")
        masks[canonical_name(name)] = mask.detach() if mask.dtype == torch.bool else mask.detach() != 0
    if not masks:
        raise ValueError(f"`{argument}` holds no mask.")
    return masks


# ---------------------------------------------------------------------------------- sparsity
def _sparsity_update(masks: MaskSource) -> dict[str, tuple[Tensor, int]]:
    """Per layer: ``(number of pruned entries, number of entries)``."""
    return {name: ((~m).sum(), m.numel()) for name, m in _as_masks(masks, "masks").items()}


def _sparsity_compute(pruned: Tensor, total: Union[Tensor, int]) -> Tensor:
    """``pruned / total`` as a float tensor (NaN for ``total == 0``)."""
    return pruned.float() / total


@overload
def sparsity(masks: MaskSource, per_layer: Literal[False] = False) -> Tensor: ...


@overload
def sparsity(masks: MaskSource, per_layer: Literal[True]) -> dict[str, Tensor]: ...


@overload
def sparsity(masks: MaskSource, per_layer: bool = False) -> Union[Tensor, dict[str, Tensor]]: ...


def sparsity(masks: MaskSource, per_layer: bool = False) -> Union[Tensor, dict[str, Tensor]]:
    """Fraction of pruned (``False``) entries: over all layers together, or per layer.

    Args:
        masks: kept-weight masks (mapping or sequence of bool tensors; non-bool tensors count
            their non-zero entries as kept) or a network (see :func:`masks_of`).
        per_layer: return ``{name: sparsity}`` instead of the global value.

    Returns:
        A 0-d float tensor, or a dict of them by (canonical) parameter name.

    Raises:
        ValueError: no masks, or an input of the wrong type.

    Example:
        >>> import torch
        >>> masks = {"a": torch.tensor([True, False, False, False]), "b": torch.tensor([True, True])}
        >>> sparsity(masks)
        tensor(0.5000)
        >>> sparsity(masks, per_layer=True)
        {'a': tensor(0.7500), 'b': tensor(0.)}
    """
    counts = _sparsity_update(masks)
    if per_layer:
        return {name: _sparsity_compute(pruned, total) for name, (pruned, total) in counts.items()}
    device = next(iter(counts.values()))[0].device
    pruned = sum((p.to(device) for p, _ in counts.values()), torch.zeros((), dtype=torch.long, device=device))
    return _sparsity_compute(pruned, sum(t for _, t in counts.values()))


# ---------------------------------------------------------------------------------- IoU
def _mask_iou_update(masks_a: MaskSource, masks_b: MaskSource) -> dict[str, tuple[Tensor, Tensor]]:
    """Per parameter name present in both: ``(|A and B|, |A or B|)`` of the kept entries.

    Raises:
        ValueError: no name in common, or a shape mismatch for a shared name.
    """
    a, b = _as_masks(masks_a, "masks_a"), _as_masks(masks_b, "masks_b")
    shared = [name for name in a if name in b]
    if not shared:
        raise ValueError(
            f"`masks_a` and `masks_b` share no parameter name (first has {sorted(a)[:5]}, second {sorted(b)[:5]}):"
            " compare masks of the same architecture."
        )
    counts = {}
    for name in shared:
        ma, mb = a[name], b[name].to(a[name].device)
        if ma.shape != mb.shape:
            raise ValueError(f"Masks of {name!r} have shapes {tuple(ma.shape)} and {tuple(mb.shape)}: they must match.")
        counts[name] = ((ma & mb).sum(), (ma | mb).sum())
    return counts


def _mask_iou_compute(intersection: Tensor, union: Tensor) -> Tensor:
    """``intersection / union``; 1 when both masks keep nothing (identical empty topologies)."""
    union_f = union.float()
    return torch.where(union > 0, intersection.float() / union_f.clamp_min(1), torch.ones_like(union_f))


@overload
def mask_iou(masks_a: MaskSource, masks_b: MaskSource, per_layer: Literal[False] = False) -> Tensor: ...


@overload
def mask_iou(masks_a: MaskSource, masks_b: MaskSource, per_layer: Literal[True]) -> dict[str, Tensor]: ...


@overload
def mask_iou(masks_a: MaskSource, masks_b: MaskSource, per_layer: bool = False) -> Union[Tensor, dict[str, Tensor]]: ...


def mask_iou(masks_a: MaskSource, masks_b: MaskSource, per_layer: bool = False) -> Union[Tensor, dict[str, Tensor]]:
    """Jaccard index ``|A and B| / |A or B|`` of the KEPT weights of two topologies, over the
    parameter names both have (overall: counts summed over layers before dividing).

    Args:
        masks_a: kept-weight masks or a network (see :func:`sparsity`).
        masks_b: the other topology, same architecture.
        per_layer: return ``{name: IoU}`` instead of the overall value.

    Returns:
        A 0-d float tensor in ``[0, 1]`` (1 when both keep nothing), or a dict of them.

    Raises:
        ValueError: no shared parameter name, shape mismatch, or inputs of the wrong type.

    Example:
        >>> import torch
        >>> a = {"w": torch.tensor([True, True, False, False])}
        >>> b = {"w": torch.tensor([True, False, True, False])}
        >>> mask_iou(a, b)
        tensor(0.3333)
    """
    counts = _mask_iou_update(masks_a, masks_b)
    if per_layer:
        return {name: _mask_iou_compute(i, u) for name, (i, u) in counts.items()}
    device = next(iter(counts.values()))[0].device
    intersection = sum((i.to(device) for i, _ in counts.values()), torch.zeros((), dtype=torch.long, device=device))
    union = sum((u.to(device) for _, u in counts.values()), torch.zeros((), dtype=torch.long, device=device))
    return _mask_iou_compute(intersection, union)


def gap_closed(before: float, after: float, floor: float) -> float:
    """The fraction of the topology gap beyond the noise floor that un-pruning closed:
    ``(after - before) / (floor - before)``.

    ``before`` is IoU(original mask, reference), ``after`` IoU(un-pruned mask, reference) and
    ``floor`` IoU(reference, reference') with reference' the same pipeline on D_r in another data
    order: the overlap chance alone leaves between two equally valid references. 1 means the
    un-pruned topology is as close to the reference as another retrain is; 0 that nothing moved;
    above 1, closer than the noise floor. NaN when ``floor <= before``: the deleted data left no
    gap beyond the noise floor, there is nothing to close.

    Example:
        >>> gap_closed(before=0.5, after=0.6, floor=0.7)
        0.5
        >>> gap_closed(before=0.7, after=0.6, floor=0.7)
        nan
    """
    before, after, floor = float(before), float(after), float(floor)
    if not floor > before:
        return math.nan
    return round((after - before) / (floor - before), 12)


def topology_gap(
    unpruned_masks: MaskSource,
    original_masks: MaskSource,
    reference_masks: MaskSource,
    noise_references: Sequence[MaskSource] = (),
) -> dict[str, float]:
    """How much closer un-pruning brought the topology to the retain-only reference, and how that
    compares with the noise floor.

    Args:
        unpruned_masks: the mask after un-pruning (or after any unlearning).
        original_masks: the mask before it (the model pruned with the deleted data).
        reference_masks: the mask of the same pruning pipeline, from the same initialisation, on
            the retained data only.
        noise_references: more such references that differ from ``reference_masks`` only in the
            data order (reference'): they define the noise floor.

    Returns:
        ``{"iou_unpruned": IoU(unpruned, reference), "iou_original": IoU(original, reference),
        "gain": iou_unpruned - iou_original}`` (positive gain: closer to the reference); with
        ``noise_references``, also ``"floor"`` (the mean IoU over all pairs of references: with
        one reference' exactly IoU(reference, reference')), ``"floor_spread"`` (the standard
        deviation of those pair IoUs, 0 for one pair), ``"before"`` and ``"after"`` (the mean
        IoU of the original and of the un-pruned mask with every reference) and ``"gap_closed"``
        (:func:`gap_closed` of those three).

    Example:
        >>> import torch
        >>> ref = [torch.tensor([True, True, False, False])]
        >>> gap = topology_gap([torch.tensor([True, True, False, False])], [torch.tensor([True, False, True, False])], ref)
        >>> {k: round(v, 4) for k, v in gap.items()}
        {'iou_unpruned': 1.0, 'iou_original': 0.3333, 'gain': 0.6667}
        >>> ref2 = [torch.tensor([True, True, True, False])]
        >>> gap = topology_gap(ref, [torch.tensor([False, False, True, True])], ref, [ref2])
        >>> {k: round(gap[k], 4) for k in ("before", "after", "floor", "gap_closed")}  # one pair: floor_spread 0
        {'before': 0.125, 'after': 0.8333, 'floor': 0.6667, 'gap_closed': 1.3077}
    """
    iou_unpruned = float(mask_iou(unpruned_masks, reference_masks))
    iou_original = float(mask_iou(original_masks, reference_masks))
    result = {"iou_unpruned": iou_unpruned, "iou_original": iou_original, "gain": iou_unpruned - iou_original}
    if noise_references:
        references = [reference_masks, *noise_references]
        pairs = [(a, b) for i, a in enumerate(references) for b in references[i + 1 :]]
        ious = [float(mask_iou(a, b)) for a, b in pairs]
        floor = sum(ious) / len(ious)
        spread = math.sqrt(sum((v - floor) ** 2 for v in ious) / (len(ious) - 1)) if len(ious) > 1 else 0.0
        before = sum(float(mask_iou(original_masks, r)) for r in references) / len(references)
        after = sum(float(mask_iou(unpruned_masks, r)) for r in references) / len(references)
        result.update(before=before, after=after, floor=floor, floor_spread=spread, gap_closed=gap_closed(before, after, floor))
    return result
