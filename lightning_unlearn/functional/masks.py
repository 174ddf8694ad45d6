"""Masks over parameters: selection, top-k, bit packing, enforcement, structured units, regrowth.

Pure torch, usable in any training loop:

* :func:`select_parameters` picks the parameters to act on (regexes over names);
* :func:`topk_mask` turns per-parameter scores into boolean masks (global or per-tensor top-k);
* :class:`MaskedParameters` holds the masks next to their parameters and enforces them:
  gradient masking (``torch._foreach_mul_``) and the *strict freeze* that puts frozen entries
  back to their anchor after the optimiser step and clears their optimiser state, so neither
  weight decay nor momentum can move a frozen weight;
* :func:`pack_mask` / :func:`unpack_mask` store masks as 1 bit per entry;
* the structured-unit algebra (:func:`rows`, :func:`unit_scores`, :func:`unit_masks`,
  :func:`expand_units`, :func:`top_units`) lets pruning work on entries or whole rows alike;
* :func:`drop_and_regrow` is one prune-and-regrow update at constant density;
* :func:`write_through` keeps other holders' anchors in step with an out-of-band weight edit.

Example::

    >>> net = torch.nn.Linear(3, 2)
    >>> named = select_parameters(net, r"weight$")
    >>> masks = topk_mask([p.detach().abs() for _, p in named], 0.5, "global")
    >>> masked = MaskedParameters([n for n, _ in named], [p for _, p in named], masks)
    >>> masked.capture_anchor()   # frozen entries keep their current values
    >>> masked.density()
    0.5
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import Parameter
from torch.optim import Optimizer

from lightning_unlearn.validation import check_choice, check_fraction

__all__ = [
    "ROUNDINGS",
    "SCOPES",
    "MaskedParameters",
    "ParameterFilter",
    "Rounding",
    "Scope",
    "check_scope",
    "drop_and_regrow",
    "expand_units",
    "grads_finite",
    "pack_mask",
    "parameter_masks",
    "rows",
    "select_parameters",
    "top_units",
    "topk_mask",
    "turnover_at",
    "unit_masks",
    "unit_scores",
    "unpack_mask",
    "write_through",
    "zero_optimizer_state",
]

Scope = Literal["global", "layer"]
SCOPES = ("global", "layer")
#: How :func:`topk_mask` turns ``fraction * n`` into a count of kept entries.
Rounding = Literal["round", "floor"]
ROUNDINGS = ("round", "floor")
ParameterFilter = Union[str, list[str], None]


def check_scope(scope: Any, name: str = "scope") -> Scope:
    """Returns ``scope`` if it is ``"global"`` or ``"layer"``; raises a ValueError naming the fix otherwise."""
    return check_choice(
        scope,
        name,
        SCOPES,
        hint="'global' treats all selected tensors together (one ranking, one vector), 'layer' each tensor on its own.",
    )


# ---------------------------------------------------------------------------------- selection
def select_parameters(
    module: nn.Module,
    parameters: ParameterFilter,
    default: Optional[Callable[[str, Parameter], bool]] = None,
) -> list[tuple[str, Parameter]]:
    """The trainable parameters of ``module`` to act on, as ``(name, parameter)`` pairs.

    Args:
        module: the network.
        parameters: a regex or a list of regexes matched with :func:`re.search` against the names
            of ``module.named_parameters()``; a name matching any of them is selected.
            ``None`` selects those accepted by ``default`` (every trainable parameter without one).
        default: the predicate ``(name, parameter) -> bool`` used when ``parameters`` is ``None``.

    Raises:
        ValueError: an invalid regex, or nothing matched.
    """
    candidates = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if parameters is None:
        chosen = [(n, p) for n, p in candidates if default is None or default(n, p)]
        what = "the default selection"
    else:
        patterns = [parameters] if isinstance(parameters, str) else list(parameters)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise ValueError(f"`parameters` must be a regex or a non-empty list of regexes, got {parameters!r}.")
        try:
            compiled = [re.compile(p) for p in patterns]
        except re.error as err:
            raise ValueError(f"`parameters` holds an invalid regex: {err}.") from err
        chosen = [(n, p) for n, p in candidates if any(c.search(n) for c in compiled)]
        what = f"`parameters`={parameters!r}"
    if not chosen:
        names = [n for n, _ in candidates]
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValueError(
            f"{what} matched no trainable parameter of {type(module).__name__}; its trainable parameters"
            f" are: {shown or 'none'}. Fix `parameters` (regexes searched in these names)."
        )
    return chosen


# ---------------------------------------------------------------------------------- top-k
def topk_mask(scores: Sequence[Tensor], fraction: float, scope: Scope, rounding: Rounding = "round") -> list[Tensor]:
    """Boolean masks keeping the top ``fraction`` of entries by score.

    ``scope="global"`` ranks all entries of all tensors together and keeps exactly ``k`` of the
    ``n`` entries; ``scope="layer"`` ranks within each tensor and keeps ``max(1, k)`` of its
    ``n_tensor`` entries. ``k`` is ``round(fraction * n)`` (``rounding="round"``, the pruning
    callbacks) or ``int(fraction * n)`` (``rounding="floor"``: SalUn's ``generate_mask.py`` keeps the
    entries of rank ``< int(len(all_elements) * i)``). Ties are broken by position (stable sort:
    the lower flat index, in the order of ``scores``, is kept first), so masks are deterministic.

    Args:
        scores: one score tensor per parameter (any shape; masks get the same shapes and devices).
        fraction: fraction of entries kept, in (0, 1].
        scope: ``"global"`` or ``"layer"``.
        rounding: ``"round"`` (nearest, Python's ``round``) or ``"floor"`` (``int(fraction * n)``).

    Raises:
        ValueError: ``fraction`` outside (0, 1], unknown ``scope`` or ``rounding``.

    Example::

        >>> topk_mask([torch.tensor([0.1, 0.9, 0.5, 0.5])], 0.5, "global")
        [tensor([False,  True,  True, False])]
        >>> [int(m.sum()) for m in (topk_mask([torch.arange(7.0)], 0.5, "global", r)[0] for r in ("round", "floor"))]
        [4, 3]
    """
    fraction = check_fraction(fraction, "fraction")
    check_scope(scope)
    check_choice(rounding, "rounding", ROUNDINGS, hint="'round' keeps round(fraction * n) entries, 'floor' int(fraction * n).")
    size = (lambda n: round(fraction * n)) if rounding == "round" else (lambda n: int(fraction * n))
    scores = [s.detach() for s in scores]
    if scope == "layer":
        return [_keep_top(s.flatten(), max(1, size(s.numel()))).view_as(s) for s in scores]
    device = scores[0].device
    flat = torch.cat([s.flatten().to(device) for s in scores])
    keep = _keep_top(flat, size(flat.numel()))
    return [m.view_as(s).to(s.device) for m, s in zip(keep.split([s.numel() for s in scores]), scores)]


def _keep_top(flat: Tensor, k: int) -> Tensor:
    """Bool vector marking the ``k`` largest entries of ``flat`` (ties: lower index first)."""
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[order[:k]] = True
    return keep


# ---------------------------------------------------------------------------------- structured units
def rows(t: Tensor) -> Tensor:
    """``t`` as ``(rows, entries)``: conv filters / linear output rows (dim 0) are the rows."""
    return t.reshape(t.shape[0], -1) if t.ndim else t.reshape(1, 1)


def unit_scores(scores: Sequence[Tensor], structured: bool, reduce: Literal["l2", "sum"] = "sum") -> list[Tensor]:
    """Scores of the pruning units: the entries themselves, or for ``structured`` one score per
    row (the L2 norm or the sum of the entry scores of the row)."""
    if not structured:
        return [s.float() for s in scores]
    return [rows(s.float()).norm(dim=1) if reduce == "l2" else rows(s.float()).sum(dim=1) for s in scores]


def unit_masks(masks: Sequence[Tensor], structured: bool) -> list[Tensor]:
    """Masks of the pruning units: the entries, or for ``structured`` whether a row keeps any entry."""
    return list(masks) if not structured else [rows(m).any(dim=1) for m in masks]


def expand_units(units: Sequence[Tensor], like: Sequence[Tensor], structured: bool) -> list[Tensor]:
    """Entry masks from unit masks (a row's decision copied to all its entries)."""
    if not structured:
        return list(units)
    return [
        u.reshape(t.shape[:1] + (1,) * (t.ndim - 1)).expand(t.shape).clone() if t.ndim else u.reshape(())
        for u, t in zip(units, like)
    ]


def top_units(scores: Sequence[Tensor], density: float, scope: Scope) -> list[Tensor]:
    """:func:`topk_mask`, extended to ``density == 0`` (keep nothing)."""
    if density <= 0:
        return [torch.zeros_like(s, dtype=torch.bool) for s in scores]
    return topk_mask(scores, density, scope)


# ---------------------------------------------------------------------------------- prune and regrow
def turnover_at(turnover: float, progress: float) -> float:
    """Cosine-decayed turnover fraction ``tau0 * 0.5 * (1 + cos(pi * progress))``."""
    return turnover * 0.5 * (1.0 + math.cos(math.pi * progress))


def drop_and_regrow(masks: Sequence[Tensor], scores: Sequence[Tensor], tau: float, scope: Scope) -> tuple[list[Tensor], int]:
    """One prune-and-regrow update at constant density.

    In each group (each tensor for ``scope="layer"``, all tensors together for ``"global"``):
    ``n = max(1, floor(tau * #active))`` (at most the number of active and of inactive entries);
    the ``n`` active entries with the smallest score are deactivated and the ``n`` inactive
    entries with the largest score activated (ties: lower flat index first).

    Returns:
        The new masks and the total number of entries swapped in (= swapped out).
    """
    check_scope(scope)
    if scope == "layer":
        results = [_swap(m.flatten(), s.flatten(), tau) for m, s in zip(masks, scores)]
        return [new.view_as(m) for (new, _), m in zip(results, masks)], sum(n for _, n in results)
    device = masks[0].device
    new, n = _swap(torch.cat([m.flatten().to(device) for m in masks]), torch.cat([s.flatten().to(device) for s in scores]), tau)
    parts = new.split([m.numel() for m in masks])
    return [p.view_as(m).to(m.device) for p, m in zip(parts, masks)], n


def _swap(mask: Tensor, score: Tensor, tau: float) -> tuple[Tensor, int]:
    active = int(mask.sum())
    n = min(max(1, math.floor(tau * active)), active, mask.numel() - active)
    if n <= 0:
        return mask.clone(), 0
    score = score.float()
    drop = torch.sort(torch.where(mask, score, math.inf), stable=True).indices[:n]
    grow = torch.sort(torch.where(mask, -math.inf, score), descending=True, stable=True).indices[:n]
    new = mask.clone()
    new[drop] = False
    new[grow] = True
    return new, n


# ---------------------------------------------------------------------------------- storage and checks
def pack_mask(mask: Tensor) -> Tensor:
    """A boolean tensor packed 8 entries per byte (``numpy.packbits`` order, big-endian bits), on CPU."""
    bits = mask.detach().flatten().to("cpu", torch.uint8)
    bits = torch.nn.functional.pad(bits, (0, (-bits.numel()) % 8)).view(-1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (bits * weights).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: Tensor, shape: Sequence[int], device: Union[str, torch.device, None] = None) -> Tensor:
    """Inverse of :func:`pack_mask`: the boolean tensor of ``shape`` (on ``device``)."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    n = math.prod(shape)
    return bits.flatten()[:n].view(tuple(shape)).to(device=device, dtype=torch.bool)


def grads_finite(grads: Sequence[Tensor]) -> bool:
    """Whether every entry of every gradient is finite (one fused reduction, one sync)."""
    if not grads:
        return True
    return bool(
        torch.stack([n.float().to(grads[0].device) for n in torch._foreach_norm(list(grads), ord=math.inf)]).isfinite().all()
    )


# ---------------------------------------------------------------------------------- masked parameters
class MaskedParameters:
    """Parameters with boolean masks: ``True`` = may change, ``False`` = frozen.

    The anchor is what frozen entries must equal: either a copy of their values
    (:meth:`capture_anchor`) or zero (:meth:`set_anchor_zero`, pruning). The copy is stored as
    ``value * ~mask`` so that restoring is two fused ops, ``p *= mask; p += anchor``.

    Args:
        names: parameter names (used to match checkpoints).
        params: the parameters.
        masks: one boolean mask per parameter, same shape; moved to the parameter's device.

    Raises:
        ValueError: lengths or shapes that do not match.

    Example::

        >>> p = nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> masked = MaskedParameters(["p"], [p], [torch.tensor([True, False])])
        >>> masked.capture_anchor()
        >>> opt = torch.optim.SGD([p], lr=0.1, weight_decay=0.1)
        >>> p.grad = torch.ones(2); masked.mask_gradients(); opt.step(); masked.restore_frozen(opt)
        >>> p[1].item()   # frozen: weight decay did not move it
        2.0
    """

    def __init__(self, names: Sequence[str], params: Sequence[Parameter], masks: Sequence[Tensor]) -> None:
        if not (len(names) == len(params) == len(masks)):
            raise ValueError(f"Got {len(names)} names, {len(params)} parameters and {len(masks)} masks: they must match.")
        self.names = list(names)
        self.params: list[Tensor] = list(params)  # Parameters: typed as tensors for the torch._foreach_* ops
        self.masks: list[Tensor] = []
        self.anchor: Optional[list[Tensor]] = None
        self.anchor_zero = False
        self.set_masks(masks)

    # ------------------------------------------------------------------ masks and anchors
    def set_masks(self, masks: Sequence[Tensor]) -> None:
        """Replaces the masks; a value anchor is re-captured so newly frozen entries stay where they are now."""
        for name, p, m in zip(self.names, self.params, masks):
            if m.shape != p.shape:
                raise ValueError(f"Mask of {name!r} has shape {tuple(m.shape)}, the parameter {tuple(p.shape)}.")
        self.masks = [m.detach().to(device=p.device, dtype=torch.bool) for p, m in zip(self.params, masks)]
        if self.anchor is not None:
            self.capture_anchor()

    @torch.no_grad()
    def capture_anchor(self) -> None:
        """Frozen entries will be kept at their current values."""
        self.anchor_zero = False
        self.anchor = list(torch._foreach_mul([p.detach() for p in self.params], self._frozen()))

    def set_anchor_zero(self) -> None:
        """Frozen entries are pinned at zero (pruning): no copy of the values is kept."""
        self.anchor, self.anchor_zero = None, True

    @property
    def has_anchor(self) -> bool:
        return self.anchor is not None or self.anchor_zero

    def _frozen(self) -> list[Tensor]:
        return [~m for m in self.masks]

    # ------------------------------------------------------------------ enforcement
    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zeroes the gradient entries of frozen weights."""
        pairs = [(p.grad, m) for p, m in zip(self.params, self.masks) if p.grad is not None]
        if pairs:
            grads, masks = zip(*pairs)
            torch._foreach_mul_(list(grads), list(masks))

    def gradients(self) -> list[Tensor]:
        """The existing gradients of the parameters."""
        return [p.grad for p in self.params if p.grad is not None]

    @torch.no_grad()
    def apply(self) -> None:
        """Puts frozen entries to their anchor (no-op without an anchor)."""
        if self.anchor_zero:
            torch._foreach_mul_(self.params, self.masks)
        elif self.anchor is not None:
            torch._foreach_mul_(self.params, self.masks)
            torch._foreach_add_(self.params, self.anchor)

    @torch.no_grad()
    def restore_frozen(self, optimizers: Union[Optimizer, Sequence[Optimizer]]) -> None:
        """Strict freeze after an optimiser step: frozen entries back to their anchor and their
        optimiser state (every tensor state shaped like the parameter: ``momentum_buffer``,
        ``exp_avg``, ``exp_avg_sq``, ...) zeroed, so neither weight decay nor momentum moves them."""
        self.apply()
        optimizers = [optimizers] if isinstance(optimizers, Optimizer) else list(optimizers)
        states, masks = [], []
        for optimizer in optimizers:
            for p, m in zip(self.params, self.masks):
                for value in optimizer.state.get(p, {}).values():
                    if isinstance(value, Tensor) and value.shape == p.shape and value.is_floating_point():
                        states.append(value)
                        masks.append(m)
        if states:
            torch._foreach_mul_(states, masks)

    def density(self) -> float:
        """Fraction of entries allowed to change."""
        total = sum(m.numel() for m in self.masks)
        return float(sum(int(m.sum()) for m in self.masks)) / max(total, 1)

    def by_name(self) -> dict[str, Tensor]:
        """The masks by parameter name (``True`` = may change)."""
        return dict(zip(self.names, self.masks))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Names, shapes, bit-packed masks (CPU) and the anchor when it is a value copy."""
        return {
            "names": list(self.names),
            "shapes": [list(m.shape) for m in self.masks],
            "masks": [pack_mask(m) for m in self.masks],
            "anchor": self.anchor,  # replaced, never modified in place: no copy needed
            "anchor_zero": self.anchor_zero,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores masks and anchor saved by :meth:`state_dict` (parameters must match by name and shape)."""
        if list(state["names"]) != self.names:
            raise ValueError(
                f"The checkpoint masks parameters {state['names']} but this run selects {self.names}:"
                " resume with the same model and `parameters` filter."
            )
        self.anchor, self.anchor_zero = None, False
        self.set_masks([unpack_mask(packed, shape) for packed, shape in zip(state["masks"], state["shapes"])])
        if state.get("anchor") is not None:
            self.anchor = [a.to(p.device, p.dtype) for a, p in zip(state["anchor"], self.params)]
        self.anchor_zero = bool(state.get("anchor_zero", False))

    @classmethod
    def from_state_dict(cls, module: nn.Module, state: dict[str, Any]) -> MaskedParameters:
        """Rebuilds the masked parameters of ``module`` from :meth:`state_dict`."""
        named = dict(module.named_parameters())
        missing = [n for n in state["names"] if n not in named]
        if missing:
            raise ValueError(f"The checkpoint masks parameters {missing} that this model does not have.")
        params = [named[n] for n in state["names"]]
        masked = cls(state["names"], params, [torch.ones_like(p, dtype=torch.bool) for p in params])
        masked.load_state_dict(state)
        return masked


# ---------------------------------------------------------------------------------- several holders
def parameter_masks(params: Sequence[Tensor], holders: Iterable[MaskedParameters]) -> dict[int, Tensor]:
    """Position in ``params`` -> the intersection of the masks that ``holders`` hold for that parameter
    (parameters no holder masks are left out)."""
    position = {id(p): i for i, p in enumerate(params)}
    masks: dict[int, Tensor] = {}
    for masked in holders:
        for p, m in zip(masked.params, masked.masks):
            i = position.get(id(p))
            if i is not None:
                masks[i] = m if i not in masks else masks[i] & m
    return masks


@torch.no_grad()
def write_through(holders: Iterable[MaskedParameters], changed: Mapping[int, Optional[Tensor]]) -> None:
    """After weights were edited out of band, makes the value anchors of ``holders`` agree with the edit.

    A holder with a value anchor (frozen entries kept at their values, e.g. a saliency mask)
    takes the new values at the edited entries into its anchor, so its strict restore does not
    undo the edit; holders without one (pruning: anchored at zero) are left alone. ``changed``
    maps ``id(parameter)`` to a bool tensor of edited entries (``None``: every entry). Call it
    when no step is half-restored for the edited entries.
    """
    for masked in holders:
        if masked.anchor is None:
            continue
        masked.anchor = list(masked.anchor)
        for i, p in enumerate(masked.params):
            if id(p) not in changed:
                continue
            where = changed[id(p)]
            fresh = p.detach() * ~masked.masks[i]
            masked.anchor[i] = fresh if where is None else torch.where(where, fresh, masked.anchor[i])


@torch.no_grad()
def zero_optimizer_state(optimizers: Iterable[Optimizer], params: Iterable[Tensor]) -> None:
    """Zeroes every per-parameter tensor state (momentum, Adam moments) of ``params`` in ``optimizers``."""
    params = list(params)
    states = []
    for optimizer in optimizers:
        for p in params:
            states += [v for v in optimizer.state.get(p, {}).values() if isinstance(v, Tensor) and v.shape == p.shape]
    if states:
        torch._foreach_zero_(states)
