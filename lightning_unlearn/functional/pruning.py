"""Pruning: magnitude (OMP/IMP), SynFlow and random scores, pruning to a density, the
``torch.nn.utils.prune`` interop, and the :class:`PruningRecipe` that says how a topology was pruned.

Pure torch, usable in any training loop::

    masks = apply_pruning(net, amount=0.9)            # one shot, in place; returns the kept masks
    recipe = PruningRecipe(amount=0.9, structured=True)
    kept = recipe.masks([w for _, w in named])        # the same rule on any weights (e.g. a reference)

The soft counterpart, l1 sparsity as a subgradient (:func:`l1_strength`,
:func:`add_l1_subgradient`, the l1-sparse unlearning of the same paper), lives here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lightning_unlearn.functional.masks import (
    MaskedParameters,
    ParameterFilter,
    Scope,
    check_scope,
    expand_units,
    select_parameters,
    top_units,
    unit_masks,
    unit_scores,
)
from lightning_unlearn.validation import check_choice, check_fraction, check_int

__all__ = [
    "L1_SCHEDULES",
    "PRUNABLE_MODULES",
    "PRUNE_SUFFIX",
    "PRUNING_METHODS",
    "L1Schedule",
    "PruningMethod",
    "PruningRecipe",
    "add_l1_subgradient",
    "apply_pruning",
    "batch_loss",
    "canonical_name",
    "existing_masks",
    "l1_strength",
    "prunable_weights",
    "prune_reparametrisation",
    "prune_to_density",
    "pruning_scores",
    "sync_prune_buffers",
    "synflow_masks",
]

PruningMethod = Literal["omp", "imp", "synflow", "random"]
PRUNING_METHODS = ("omp", "imp", "synflow", "random")

PRUNABLE_MODULES = (nn.modules.conv._ConvNd, nn.Linear)
PRUNE_SUFFIX = "_orig"


# ---------------------------------------------------------------------------------- torch.nn.utils.prune interop
def canonical_name(name: str) -> str:
    """``name`` without the ``_orig`` suffix that ``torch.nn.utils.prune`` gives the raw parameter."""
    return name[: -len(PRUNE_SUFFIX)] if name.endswith(PRUNE_SUFFIX) else name


def prunable_weights(network: nn.Module) -> Callable[[str, Tensor], bool]:
    """Predicate ``(name, parameter) -> bool`` accepting the weights of conv and linear layers
    (``weight``, or ``weight_orig`` under ``torch.nn.utils.prune``) of ``network``."""
    modules = dict(network.named_modules())

    def accept(name: str, param: Tensor) -> bool:
        owner, _, leaf = canonical_name(name).rpartition(".")
        return leaf == "weight" and isinstance(modules.get(owner), PRUNABLE_MODULES)

    return accept


def prune_reparametrisation(network: nn.Module, name: str) -> Optional[Tensor]:
    """The ``weight_mask`` buffer of a parameter ``..._orig`` under ``torch.nn.utils.prune``, else ``None``."""
    if not name.endswith(PRUNE_SUFFIX):
        return None
    owner, _, leaf = name.rpartition(".")
    module = network.get_submodule(owner) if owner else network
    buffer = getattr(module, leaf[: -len(PRUNE_SUFFIX)] + "_mask", None)
    return buffer if isinstance(buffer, Tensor) else None


def existing_masks(network: nn.Module, named: Sequence[tuple[str, Tensor]]) -> list[Tensor]:
    """Kept masks already imposed by ``torch.nn.utils.prune`` (all-true where there is none)."""
    out = []
    for name, p in named:
        buffer = prune_reparametrisation(network, name)
        out.append(buffer.detach() != 0 if buffer is not None else torch.ones_like(p, dtype=torch.bool))
    return out


@torch.no_grad()
def sync_prune_buffers(network: nn.Module, masked: MaskedParameters) -> None:
    """Writes the masks into the ``weight_mask`` buffers of ``torch.nn.utils.prune`` reparametrisations,
    so ``weight = weight_orig * weight_mask`` follows the topology (e.g. after un-pruning revives weights)."""
    for name, mask in zip(masked.names, masked.masks):
        buffer = prune_reparametrisation(network, name)
        if buffer is not None:
            buffer.copy_(mask)


# ---------------------------------------------------------------------------------- scores and densities
def pruning_scores(params: Sequence[Tensor], method: PruningMethod, seed: int = 0) -> list[Tensor]:
    """Per-entry pruning scores (higher = kept): ``|w|`` for OMP/IMP, seeded uniform noise for
    random pruning (drawn on the CPU, so identical on every device). SynFlow scores need the
    network: see :func:`synflow_masks`."""
    if method in ("omp", "imp"):
        return [p.detach().abs() for p in params]
    if method == "random":
        generator = torch.Generator().manual_seed(seed)
        return [torch.rand(p.shape, generator=generator).to(p.device) for p in params]
    raise ValueError(f"`method` must be one of {PRUNING_METHODS} (SynFlow through synflow_masks), got {method!r}.")


@torch.no_grad()
def prune_to_density(
    scores: Sequence[Tensor],
    kept: Sequence[Tensor],
    density: float,
    scope: Scope = "global",
    structured: bool = False,
    reduce: Literal["l2", "sum"] = "sum",
) -> list[Tensor]:
    """Keeps the top ``density`` of the units (entries, or rows when ``structured``) among those
    ``kept`` so far; pruned units stay pruned.

    ``density`` is a fraction of ALL units (of all tensors for ``scope="global"``, of each tensor
    for ``"layer"``). Ties: lower position first (see :func:`~lightning_unlearn.functional.masks.topk_mask`).

    Args:
        scores: per-entry scores, one tensor per parameter.
        kept: the current kept masks (bool, same shapes).
        density: fraction of units kept, in [0, 1].
        scope: ``"global"`` or ``"layer"``.
        structured: prune whole rows (conv filters / linear output rows).
        reduce: how entry scores make a row score (``"l2"``: the norm, used with ``|w|``).

    Returns:
        The new kept masks (subsets of ``kept``).
    """
    units = unit_scores(scores, structured, reduce)
    alive = unit_masks(kept, structured)
    ranked = [torch.where(a, u, torch.full_like(u, -math.inf)) for u, a in zip(units, alive)]
    chosen = [c & a for c, a in zip(top_units(ranked, density, scope), alive)]
    return [m & k for m, k in zip(expand_units(chosen, kept, structured), kept)]


@contextmanager
def eval_mode(network: nn.Module) -> Iterator[nn.Module]:
    """Runs a block with every submodule in eval mode, restoring each one's own mode afterwards
    (the pure-torch twin of :func:`lightning_unlearn.models.network.eval_mode`, which layers above
    use; ``functional/`` imports nothing of the package above it)."""
    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    try:
        yield network
    finally:
        for module, training in modes:
            module.training = training


def synflow_masks(
    network: nn.Module,
    names: Sequence[str],
    kept: Sequence[Tensor],
    amount: float,
    input_shape: Sequence[int],
    scope: Scope = "global",
    structured: bool = False,
    iterations: int = 100,
) -> list[Tensor]:
    """SynFlow (Tanaka et al., NeurIPS 2020), as in OPTML Unlearn-Sparse ``main_synflow.py``:
    data-free, iterative. The network is linearised (every floating parameter and buffer replaced
    by its absolute value, in float64; BatchNorm in eval mode; the network itself is untouched:
    :func:`torch.func.functional_call`), an all-ones input of ``input_shape`` is passed, and the
    score of a weight is ``|dR/dw * w|`` with ``R`` the sum of the outputs. Over ``iterations``
    rounds the kept density follows the exponential schedule ``(1 - amount) ** (k / iterations)``,
    re-scoring the masked network each round.

    Returns:
        The kept masks of ``names`` (subsets of ``kept``).
    """
    device = kept[0].device
    state = {
        n: t.detach().abs().double() for n, t in [*network.named_parameters(), *network.named_buffers()] if t.is_floating_point()
    }
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    kept = list(kept)
    with eval_mode(network), torch.enable_grad():
        for k in range(1, iterations + 1):
            weights = [(state[n] * m).requires_grad_(True) for n, m in zip(names, kept)]
            out = functional_call(network, {**state, **dict(zip(names, weights))}, (ones,))
            grads = torch.autograd.grad(out.sum(), weights, allow_unused=True)
            scores = [(g * w).abs().detach() if g is not None else torch.zeros_like(w) for g, w in zip(grads, weights)]
            kept = prune_to_density(scores, kept, (1.0 - amount) ** (k / iterations), scope, structured, "sum")
    return kept


# ---------------------------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class PruningRecipe:
    """How a topology is pruned: the rule, independent of any network or trainer.

    ``amount`` of the units (entries, or rows with ``structured``) are pruned, ranked by
    ``method``'s score over all selected tensors (``scope="global"``) or within each
    (``"layer"``). ``rounds > 1`` (IMP only) prunes in rounds, each keeping the fraction
    ``(1 - amount) ** (1 / rounds)`` of what remains, so that the final sparsity is ``amount``.
    Magnitude rows are ranked by their L2 norm, other scores by their sum.

    Attributes:
        amount: target sparsity, in (0, 1].
        method: ``"omp"``/``"imp"`` (``|w|``), ``"synflow"`` (data-free, needs the network and
            ``input_shape``) or ``"random"`` (seeded).
        structured: prune whole conv filters / linear output rows.
        scope: ``"global"`` or ``"layer"``.
        rounds: IMP rounds.
        seed: seed of random pruning.
        input_shape: SynFlow's input shape without the batch dimension (``None``: given at
            :meth:`masks` time).
        synflow_iterations: SynFlow rounds.

    Raises:
        ValueError: any field out of range (each message names the field and the fix).

    Example::

        >>> recipe = PruningRecipe(amount=0.5)
        >>> recipe.masks([torch.tensor([[3.0, -1.0], [0.5, 2.0]])])
        [tensor([[ True, False],
                [False,  True]])]
    """

    amount: float = 0.95
    method: PruningMethod = "omp"
    structured: bool = False
    scope: Scope = "global"
    rounds: int = 1
    seed: int = 0
    input_shape: Optional[Sequence[int]] = None  # normalised to a tuple
    synflow_iterations: int = 100

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the fields once
        set_(self, "amount", check_fraction(self.amount, "amount", hint="the fraction of weights pruned (0.95: 95 % sparse)."))
        check_choice(self.method, "method", PRUNING_METHODS)
        check_scope(self.scope)
        set_(self, "rounds", check_int(self.rounds, "rounds", minimum=1, hint="the number of IMP rounds (1: one shot)."))
        if self.rounds > 1 and self.method != "imp":
            raise ValueError(f"`rounds`={self.rounds} applies to method='imp' only; use method='imp' or rounds=1.")
        set_(self, "synflow_iterations", check_int(self.synflow_iterations, "synflow_iterations", minimum=1))
        if self.input_shape is not None:
            shape = self.input_shape
            if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or not len(shape):
                raise ValueError(
                    f"`input_shape` must list positive sizes without the batch dimension, got {shape!r}: e.g. [1, 8, 8]."
                )
            dims = [
                check_int(d, "input_shape", minimum=1, hint="list positive sizes without the batch dimension, e.g. [1, 8, 8].")
                for d in shape
            ]
            set_(self, "input_shape", tuple(dims))
        set_(self, "structured", bool(self.structured))
        set_(self, "seed", check_int(self.seed, "seed"))

    @property
    def reduce(self) -> Literal["l2", "sum"]:
        """How entry scores make a row score: the L2 norm for magnitude, the sum otherwise."""
        return "l2" if self.method in ("omp", "imp") else "sum"

    @property
    def needs_network(self) -> bool:
        """Whether the scores need the network (SynFlow), not only the weights."""
        return self.method == "synflow"

    def density_after(self, rounds: int) -> float:
        """Kept fraction after ``rounds`` rounds: ``(1 - amount) ** (rounds / self.rounds)``."""
        return (1.0 - self.amount) ** (rounds / self.rounds)

    def masks(
        self,
        weights: Sequence[Tensor],
        kept: Optional[Sequence[Tensor]] = None,
        density: Optional[float] = None,
        *,
        network: Optional[nn.Module] = None,
        names: Optional[Sequence[str]] = None,
        input_shape: Optional[Sequence[int]] = None,
    ) -> list[Tensor]:
        """The kept masks of ``weights`` pruned by this recipe (subsets of ``kept``).

        Args:
            weights: the weights to prune, one tensor per parameter (not modified).
            kept: the masks already imposed (pruned units stay pruned; default: nothing pruned).
            density: the kept fraction to reach (default ``1 - amount``; IMP rounds pass
                :meth:`density_after`). SynFlow always runs its whole schedule to ``amount``.
            network: SynFlow only: the network holding ``weights`` as its parameters ``names``.
            names: SynFlow only: the names of ``weights`` in ``network``.
            input_shape: SynFlow only: overrides :attr:`input_shape`.

        Raises:
            ValueError: SynFlow without ``network``/``names`` or an input shape.
        """
        kept = [torch.ones_like(w, dtype=torch.bool) for w in weights] if kept is None else list(kept)
        if self.method == "synflow":
            shape = input_shape if input_shape is not None else self.input_shape
            if shape is None:
                raise ValueError("method='synflow' needs `input_shape` (one input without the batch dimension, e.g. [1, 8, 8]).")
            if network is None or names is None:
                raise ValueError("method='synflow' scores a network: pass `network` and the `names` of the weights in it.")
            return synflow_masks(network, names, kept, self.amount, shape, self.scope, self.structured, self.synflow_iterations)
        density = 1.0 - self.amount if density is None else density
        weights = [w * k for w, k in zip(weights, kept)]
        return prune_to_density(
            pruning_scores(weights, self.method, self.seed), kept, density, self.scope, self.structured, self.reduce
        )


@torch.no_grad()
def apply_pruning(
    network: nn.Module,
    amount: float = 0.95,
    method: PruningMethod = "omp",
    structured: bool = False,
    scope: Scope = "global",
    parameters: ParameterFilter = None,
    seed: int = 0,
    input_shape: Optional[Sequence[int]] = None,
    iterations: int = 100,
) -> dict[str, Tensor]:
    """Prunes ``network`` in place, once, to sparsity ``amount`` and returns the kept masks by name.

    Pruned entries are set to exactly 0; entries already masked by ``torch.nn.utils.prune`` stay
    pruned (their ``weight_orig`` is zeroed and ``weight_mask`` updated to the new mask). ``"imp"``
    prunes like ``"omp"`` here (one round); the ``MagnitudePruning`` callback spreads IMP rounds
    over training. Nothing keeps the weights at zero afterwards: train with the callback, or mask
    gradients yourself (:class:`~lightning_unlearn.functional.MaskedParameters`).

    Args:
        network: the network.
        amount: fraction of units pruned, in (0, 1].
        method: ``"omp"``/``"imp"`` (``|w|``), ``"synflow"`` or ``"random"``.
        structured: prune whole conv filters / linear rows (by L2 norm for magnitude).
        scope: rank over all selected tensors (``"global"``) or within each (``"layer"``).
        parameters: regex(es) over parameter names (default: conv and linear weights).
        seed: seed of random pruning.
        input_shape: shape of one input without the batch dimension (SynFlow only).
        iterations: SynFlow rounds.

    Raises:
        ValueError: invalid arguments or a filter matching nothing.

    Example::

        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> masks = apply_pruning(net, amount=0.5)
        >>> sorted(masks), sum(int(m.sum()) for m in masks.values())
        (['0.weight', '2.weight'], 9)
    """
    recipe = PruningRecipe(amount, method, structured, scope, seed=seed, input_shape=input_shape, synflow_iterations=iterations)
    named = select_parameters(network, parameters, prunable_weights(network))
    kept = existing_masks(network, named)
    masks = recipe.masks([p for _, p in named], kept, network=network, names=[n for n, _ in named])
    masked = MaskedParameters([n for n, _ in named], [p for _, p in named], masks)
    masked.set_anchor_zero()
    masked.apply()
    sync_prune_buffers(network, masked)
    return dict(zip(masked.names, masked.masks))


def batch_loss(network: nn.Module, weights: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of ``network`` with ``weights`` substituted (``functional_call``)."""
    logits = functional_call(network, weights, (x,))
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ValueError("Scoring needs a forward returning (batch, classes) logits; wrap the network so it does.")
    return F.cross_entropy(logits, y)


# ---------------------------------------------------------------------------------- l1 sparsity
L1Schedule = Literal["constant", "linear_decay", "linear_growth"]
L1_SCHEDULES = ("constant", "linear_decay", "linear_growth")


def l1_strength(alpha: float, schedule: L1Schedule, index: int, length: int, off: int = 0) -> float:
    """The l1 weight ``gamma`` at ``index`` (epoch or step, 0-based) of ``length``, the last
    ``off`` of which carry no l1 (Unlearn-Sparse ``FT_iter``):

    * ``constant``: ``alpha``;
    * ``linear_decay``: ``alpha * (1 - index / (length - off))``;
    * ``linear_growth``: ``alpha * index / (length - off)``;

    and ``0`` for ``index >= length - off``.

    Example::

        >>> [l1_strength(1.0, "linear_decay", e, 4) for e in range(4)]
        [1.0, 0.75, 0.5, 0.25]
    """
    check_choice(schedule, "schedule", L1_SCHEDULES)
    active = length - off
    if index >= active:
        return 0.0
    if schedule == "constant":
        return alpha
    ramp = index / active
    return alpha * (1.0 - ramp) if schedule == "linear_decay" else alpha * ramp


@torch.no_grad()
def add_l1_subgradient(params: Sequence[Tensor], gamma: float) -> None:
    """``grad += gamma * sign(theta)`` for every parameter that has a gradient (fused foreach ops)."""
    with_grad = [p for p in params if p.grad is not None]
    if gamma == 0.0 or not with_grad:
        return
    torch._foreach_add_(
        [cast(Tensor, p.grad) for p in with_grad], torch._foreach_sign([p.detach() for p in with_grad]), alpha=gamma
    )
