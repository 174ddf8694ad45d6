"""Un-pruning: re-derive a sparse topology from retained data only (the rule is our design).

Pure torch, usable in any training loop. Two kinds of rule:

* **replay** (:func:`replay_lottery_masks`): re-run the pruning pipeline itself, iterative
  magnitude pruning with rewinding to the original initialisation, on retained data only. The
  topology it returns is a function of the initialisation, D_r and a seed alone: it carries no
  trace of the deleted data by construction;
* **scores** (:data:`UNPRUNING_SCORES`, each a function of a :class:`ScoreContext`): heuristics
  that re-rank the current sparse model's weights on retained batches; they read the trained
  weights, which the deleted data shaped, and on Fashion-MNIST they do not move the topology
  towards the retain-only reference (README, "Sparse models").

Then :func:`unpruned_masks` (the retain-driven topology at the same sparsity),
:func:`regrow_toward` (one gradual drop/regrow step towards it), :func:`swap_topology` (the
weight edit) and :func:`apply_unpruning`, the one-shot swap on a sparse network::

    masks = apply_unpruning(sparse_net, retained_batches, values=dense_weights)
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim import Optimizer

from lightning_unlearn.functional.masks import (
    MaskedParameters,
    ParameterFilter,
    Scope,
    check_scope,
    expand_units,
    rows,
    select_parameters,
    top_units,
    unit_masks,
    unit_scores,
)
from lightning_unlearn.functional.pruning import (
    PRUNE_SUFFIX,
    batch_loss,
    eval_mode,
    existing_masks,
    prunable_weights,
    prune_to_density,
    sync_prune_buffers,
)
from lightning_unlearn.validation import check_choice, check_int

__all__ = [
    "REVIVE",
    "UNPRUNING_SCORES",
    "Revive",
    "ScoreContext",
    "ScoreFn",
    "apply_unpruning",
    "gradient_score",
    "is_row_structured",
    "magnitude_after_finetune_score",
    "regrow_toward",
    "replay_lottery_masks",
    "resolve_score",
    "retain_magnitude_score",
    "sparse_masks",
    "swap_topology",
    "taylor_score",
    "unpruned_masks",
    "unpruning_scores",
]

Revive = Literal["original", "zero"]
REVIVE = ("original", "zero")


# ---------------------------------------------------------------------------------- scores
@dataclass
class ScoreContext:
    """What a score function sees.

    Attributes:
        network: the network, in eval mode while scoring (BatchNorm running statistics).
        names: names of the scored parameters in ``network``.
        weights: their scoring values: the current weights, with pruned entries at their values
            before pruning when known (else 0). Detached; do not modify.
        masks: the current kept masks.
        batches: retained ``(x, y)`` batches on the network's device.
        lr: step size of scores that fine-tune (``magnitude_after_finetune``).
        gate: usage level, relative to the tensor's mean, below which ``retain_magnitude``
            discounts a weight.
    """

    network: nn.Module
    names: list[str]
    weights: list[Tensor]
    masks: list[Tensor]
    batches: list[tuple[Tensor, Tensor]]
    lr: float = 0.01
    gate: float = 0.05

    def gradients(self, x: Tensor, y: Tensor, weights: Optional[Sequence[Tensor]] = None) -> list[Tensor]:
        """Gradient of the batch-mean cross-entropy on ``(x, y)`` w.r.t. the scored parameters,
        evaluated at ``weights`` (default: :attr:`weights`); ``.grad`` fields are untouched."""
        leaves = [w.detach().requires_grad_(True) for w in (self.weights if weights is None else weights)]
        with torch.enable_grad():
            loss = batch_loss(self.network, dict(zip(self.names, leaves)), x, y)
            return list(torch.autograd.grad(loss, leaves, allow_unused=False))


ScoreFn = Callable[[ScoreContext], list[Tensor]]


def gradient_score(ctx: ScoreContext) -> list[Tensor]:
    """``u = mean_b |g_b|``: how strongly the retained data pulls on each weight (its *usage*;
    pruned ones included: a pruned weight D_r needs gets a large score), per-batch gradients ``g_b``."""
    total = [torch.zeros_like(w) for w in ctx.weights]
    for x, y in ctx.batches:
        torch._foreach_add_(total, torch._foreach_abs(ctx.gradients(x, y)))
    return list(torch._foreach_div(total, float(len(ctx.batches))))


def retain_magnitude_score(ctx: ScoreContext) -> list[Tensor]:
    """``|w| * u / (u + gate * mean(u))`` with ``u`` the retain usage (:func:`gradient_score`) and
    the mean over each tensor: the magnitude ranking of the pruning pipeline, kept wherever the
    retained data uses a weight, and driven to 0 for weights it does not use (a retrain on D_r
    would not have grown them). Changes the topology only where D_r disagrees with it."""
    usage = gradient_score(ctx)
    return [w.abs() * u / (u + ctx.gate * u.mean()).clamp_min(torch.finfo(u.dtype).tiny) for w, u in zip(ctx.weights, usage)]


def taylor_score(ctx: ScoreContext) -> list[Tensor]:
    """``mean_b |w * g_b|``: first-order estimate of the retained loss change when a weight is
    removed (Molchanov et al., CVPR 2019, with absolute values per batch: at a trained model the
    full-data gradient is ~0 and the full-retain gradient mirrors the forget gradient, so the
    per-batch magnitudes measure how much D_r uses a weight)."""
    total = [torch.zeros_like(w) for w in ctx.weights]
    for x, y in ctx.batches:
        torch._foreach_add_(total, torch._foreach_abs(torch._foreach_mul(ctx.gradients(x, y), ctx.weights)))
    return list(torch._foreach_div(total, float(len(ctx.batches))))


def magnitude_after_finetune_score(ctx: ScoreContext) -> list[Tensor]:
    """``|w|`` after a short dense fine-tune on D_r: one SGD step of size ``lr`` per batch on the
    scoring weights (pruned entries free to move), the network itself untouched."""
    weights = [w.clone() for w in ctx.weights]
    for x, y in ctx.batches:
        torch._foreach_add_(weights, ctx.gradients(x, y, weights), alpha=-ctx.lr)
    return list(torch._foreach_abs(weights))


UNPRUNING_SCORES: dict[str, ScoreFn] = {
    "retain_magnitude": retain_magnitude_score,
    "taylor": taylor_score,
    "gradient": gradient_score,
    "magnitude_after_finetune": magnitude_after_finetune_score,
}


def resolve_score(score: str) -> ScoreFn:
    """A score function by registry name (:data:`UNPRUNING_SCORES`) or dotted import path
    (``"package.module.function"``, a callable ``ScoreContext -> list[Tensor]``).

    Raises:
        ValueError: an unknown name, a path that does not import, or a non-callable.
    """
    if not isinstance(score, str):
        raise ValueError(f"`score` must be a name in {sorted(UNPRUNING_SCORES)} or a dotted path to a function, got {score!r}.")
    if score in UNPRUNING_SCORES:
        return UNPRUNING_SCORES[score]
    module_name, _, attribute = score.rpartition(".")
    if not module_name:
        raise ValueError(
            f"Unknown `score` {score!r}: use one of {sorted(UNPRUNING_SCORES)} or a dotted path 'package.module.function'."
        )
    try:
        fn = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"`score`={score!r} does not import ({err}); give 'package.module.function'.") from None
    if not callable(fn):
        raise ValueError(f"`score`={score!r} is not callable: it must map a ScoreContext to one score tensor per parameter.")
    return fn


def unpruning_scores(
    score: Union[str, ScoreFn],
    network: nn.Module,
    names: Sequence[str],
    params: Sequence[Tensor],
    masks: Sequence[Tensor],
    pruned_values: Sequence[Tensor],
    batches: list[tuple[Tensor, Tensor]],
    lr: float = 0.01,
    gate: float = 0.05,
) -> list[Tensor]:
    """Retain-only scores of ``params`` (float, detached), the network in eval mode.

    Kept entries are scored at their current values, pruned ones at ``pruned_values`` (their
    values before pruning when known, else 0).

    Args:
        score: a name in :data:`UNPRUNING_SCORES`, a dotted path, or a score function.
        network: the network holding ``params`` under ``names``.
        names: names of the scored parameters in ``network``.
        params: the parameters.
        masks: their kept masks.
        pruned_values: values of the pruned entries (only read where ``masks`` is False).
        batches: retained ``(x, y)`` batches on the network's device.
        lr: step size of ``magnitude_after_finetune``.
        gate: the usage gate of ``retain_magnitude``.

    Raises:
        ValueError: the score function returns the wrong number or shapes of tensors.
    """
    score_fn = resolve_score(score) if isinstance(score, str) else score
    weights = [torch.where(m, p.detach(), v) for p, m, v in zip(params, masks, pruned_values)]
    context = ScoreContext(network, list(names), weights, list(masks), batches, lr, gate)
    with eval_mode(network):
        scores = score_fn(context)
    if len(scores) != len(weights) or any(s.shape != w.shape for s, w in zip(scores, weights)):
        name = score if isinstance(score, str) else getattr(score, "__qualname__", repr(score))
        raise ValueError(f"The score function {name!r} must return one tensor per parameter, shaped like it.")
    return [s.detach().float() for s in scores]


# ---------------------------------------------------------------------------------- replay
def replay_lottery_masks(
    network: nn.Module,
    names: Sequence[str],
    masks: Sequence[Tensor],
    init_state: Mapping[str, Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    rounds: int,
    steps_per_round: int,
    optimizer: Callable[[list[Tensor]], Optimizer],
    scope: Scope = "layer",
    structured: bool = False,
) -> list[Tensor]:
    """The topology the lottery-ticket pipeline finds on retained data alone, at the sparsity of
    ``masks``: the un-pruning rule "replay".

    Starting from ``init_state`` (the original initialisation the pipeline rewinds to), ``rounds``
    times: train every parameter of ``network`` for ``steps_per_round`` optimiser steps on the next
    retained batches (cross-entropy, train mode, pruned weights held at 0 with masked gradients),
    prune by magnitude to the density of this round, and rewind the survivors to ``init_state``.
    Round ``r`` (1-based) keeps the fraction ``d ** (r / rounds)`` of the units, ``d`` the density
    of ``masks`` in each tensor (``scope="layer"``, the pipeline's per-layer pruning) or over all of
    them (``"global"``); whole rows by L2 norm with ``structured``. The last round lands exactly on
    the counts of ``masks``. ``network`` and its parameters are not modified: the replay runs on
    copies through :func:`torch.func.functional_call`; BatchNorm statistics are replayed too.

    What holds (the guarantee): the returned masks are a function of ``init_state``, the retained
    batches and the optimiser alone, so they hold no information about the deleted data (exactly
    as a Retrain's topology), and they have the sparsity of ``masks`` (per tensor with
    ``scope="layer"``). What is NOT proven: how close they come to the topology of the full
    pipeline on D_r (more steps per round, another data order); that is measured (README,
    "Sparse models"). With ``steps_per_round`` and the optimiser of the pipeline itself the result
    has the distribution of the reference topology under another data order.

    Args:
        network: a network of the architecture (its forward is used, its weights are not).
        names: the parameters to prune (names in ``network``; ``..._orig`` under
            ``torch.nn.utils.prune``, whose ``..._mask`` buffers follow the replay's masks).
        masks: the current kept masks of ``names``: their densities (and row structure) are the target.
        init_state: the initialisation to rewind to (``network.state_dict()`` keys; missing keys
            take the network's current values).
        batches: retained ``(x, y)`` training batches, on the network's device, at least
            ``rounds * steps_per_round`` of them (an endless stream is fine).
        rounds: pruning rounds (>= 1).
        steps_per_round: optimiser steps per round (>= 1).
        optimizer: a factory ``list of tensors -> Optimizer``.
        scope: ``"layer"`` (each tensor keeps its own density) or ``"global"``.
        structured: prune whole rows (conv filters / linear output rows), ranked by L2 norm.

    Returns:
        The kept masks of ``names`` (bool, shaped like ``masks``).

    Raises:
        ValueError: non-positive ``rounds``/``steps_per_round``, a name ``network`` lacks, too few
            batches.

    Example::

        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> stream = ((torch.randn(16, 4), torch.randint(0, 2, (16,))) for _ in range(6))
        >>> half = [torch.rand(8, 4) < 2.0, torch.ones(2, 8, dtype=torch.bool)]
        >>> half[0][:4] = False                             # 50 % of the first layer pruned
        >>> new = replay_lottery_masks(net, ["0.weight", "2.weight"], half, net.state_dict(), stream,
        ...                            rounds=2, steps_per_round=3, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
        >>> [int(m.sum()) for m in new]
        [16, 16]
    """
    rounds = check_int(rounds, "rounds", minimum=1, hint="the number of pruning rounds replayed.")
    steps_per_round = check_int(steps_per_round, "steps_per_round", minimum=1, hint="optimiser steps per replayed round.")
    check_scope(scope)
    params = dict(network.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"replay_lottery_masks: {type(network).__name__} has no parameter {missing[:3]}.")
    current_state = {**dict(network.named_parameters()), **dict(network.named_buffers())}
    start = {k: (init_state[k] if k in init_state else v).detach() for k, v in current_state.items()}
    buffers = {k for k, _ in network.named_buffers()}
    prune_buffers = {n: n[: -len(PRUNE_SUFFIX)] + "_mask" for n in names if n.endswith(PRUNE_SUFFIX)}
    prune_buffers = {n: b for n, b in prune_buffers.items() if b in buffers}
    unit_count = [u.numel() for u in unit_masks(masks, structured)]
    unit_kept = [int(u.sum()) for u in unit_masks(masks, structured)]
    stream: Iterator[tuple[Tensor, Tensor]] = iter(batches)
    kept = [torch.ones_like(m, dtype=torch.bool) for m in masks]
    modes = [(m, m.training) for m in network.modules()]
    network.train()
    try:
        for r in range(1, rounds + 1):
            state = {k: v.clone() for k, v in start.items()}
            for n, k in zip(names, kept):
                state[n].mul_(k)
                if n in prune_buffers:
                    state[prune_buffers[n]] = k.to(state[prune_buffers[n]].dtype)
            leaves = [state[k].requires_grad_(True) for k in params if k not in buffers]
            opt = optimizer(leaves)
            pruned = [(state[n], k) for n, k in zip(names, kept)]
            for _ in range(steps_per_round):
                try:
                    x, y = next(stream)
                except StopIteration:
                    raise ValueError(
                        f"replay_lottery_masks needs {rounds * steps_per_round} batches; the stream ended early."
                    ) from None
                opt.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    F.cross_entropy(functional_call(network, state, (x,)), y).backward()
                with torch.no_grad():
                    grads = [(t.grad, k) for t, k in pruned if t.grad is not None]
                    if grads:
                        torch._foreach_mul_([g for g, _ in grads], [k for _, k in grads])
                opt.step()
                with torch.no_grad():
                    torch._foreach_mul_([t for t, _ in pruned], [k for _, k in pruned])
            scores = [state[n].detach().abs() for n in names]
            if scope == "global":
                density = (sum(unit_kept) / sum(unit_count)) ** (r / rounds)
                kept = prune_to_density(scores, kept, density, "global", structured, "l2")
            else:
                kept = [
                    prune_to_density([s], [k], (c / n) ** (r / rounds), "layer", structured, "l2")[0]
                    for s, k, c, n in zip(scores, kept, unit_kept, unit_count)
                ]
    finally:
        for module, training in modes:
            module.training = training
    return [k.clone() for k in kept]


# ---------------------------------------------------------------------------------- topology
def unpruned_masks(
    scores: Sequence[Tensor], masks: Sequence[Tensor], scope: Scope = "global", structured: bool = False
) -> list[Tensor]:
    """The retain-driven topology ``M'``: the top-scored units (entries, or rows summed when
    ``structured``) at the sparsity of ``masks``: the same number of kept units in total
    (``scope="global"``) or in each tensor (``"layer"``). Ties: lower position first.

    Example::

        >>> unpruned_masks([torch.tensor([1.0, 2.0, 6.0, 5.0])], [torch.tensor([True, True, False, False])])
        [tensor([False, False,  True,  True])]
    """
    units = unit_scores(scores, structured, "sum")
    kept = unit_masks(masks, structured)
    if scope == "global":
        total = sum(u.numel() for u in units)
        chosen = top_units(units, sum(int(k.sum()) for k in kept) / total, "global")
    else:
        chosen = [top_units([u], int(k.sum()) / u.numel(), "global")[0] for u, k in zip(units, kept)]
    return expand_units(chosen, masks, structured)


def regrow_toward(
    masks: Sequence[Tensor],
    target: Sequence[Tensor],
    scores: Sequence[Tensor],
    turnover: float,
    scope: Scope = "global",
    structured: bool = False,
) -> list[Tensor]:
    """One gradual step from ``masks`` towards ``target`` at constant sparsity: in each group
    (all tensors for ``scope="global"``, each tensor for ``"layer"``), of the ``d`` units kept but
    not in the target, the ``ceil(turnover * d)`` lowest-scored are dropped and as many of the
    highest-scored target units not kept are regrown."""
    units = unit_scores(scores, structured, "sum")
    kept, wanted = unit_masks(masks, structured), unit_masks(target, structured)
    groups = [list(range(len(units)))] if scope == "global" else [[i] for i in range(len(units))]
    new = [k.clone() for k in kept]
    for group in groups:
        drop = [kept[i] & ~wanted[i] for i in group]
        grow = [wanted[i] & ~kept[i] for i in group]
        d = sum(int(m.sum()) for m in drop)
        if d == 0:
            continue
        n = min(math.ceil(turnover * d), sum(int(m.sum()) for m in grow))
        size = sum(units[i].numel() for i in group)
        out = _lowest(drop, [units[i] for i in group], n, size)
        up = top_units(
            [torch.where(g, units[i], torch.full_like(units[i], -math.inf)) for g, i in zip(grow, group)], n / size, "global"
        )
        for j, i in enumerate(group):
            new[i] = (new[i] & ~(out[j] & drop[j])) | (up[j] & grow[j])
    return expand_units(new, masks, structured)


def _lowest(candidates: list[Tensor], scores: list[Tensor], n: int, size: int) -> list[Tensor]:
    """The ``n`` lowest-scored candidates (ties: lower position first)."""
    ranked = [torch.where(c, -s, torch.full_like(s, -math.inf)) for c, s in zip(candidates, scores)]
    return top_units(ranked, n / size, "global")


def is_row_structured(masks: Sequence[Tensor]) -> bool:
    """Whether a topology prunes whole rows only (every row all kept or all pruned, some pruned)."""
    some_pruned = False
    for m in masks:
        r = rows(m)
        if bool((r.any(dim=1) & ~r.all(dim=1)).any()):
            return False
        some_pruned |= bool((~r.any(dim=1)).any())
    return some_pruned


def sparse_masks(network: nn.Module, named: Sequence[tuple[str, Tensor]]) -> list[Tensor]:
    """The kept masks a sparse network carries for ``named``: non-zero entries not masked out by a
    ``torch.nn.utils.prune`` reparametrisation."""
    return [(p.detach() != 0) & prune_mask for (_, p), prune_mask in zip(named, existing_masks(network, named))]


@torch.no_grad()
def swap_topology(
    masked: MaskedParameters, new: Sequence[Tensor], pruned_values: Sequence[Tensor], revive: Revive = "original"
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Moves ``masked`` (anchored at zero) to the topology ``new``, in place: dropped weights are
    set to 0 and their values remembered, revived weights get their remembered value
    (``revive="original"``) or stay 0 (``"zero"``).

    Returns:
        ``(dropped, revived, pruned_values)``: the entries that left and joined the topology, and
        the values of the pruned entries after the swap (for the next swap).
    """
    dropped = [o & ~n for o, n in zip(masked.masks, new)]
    revived = [n & ~o for o, n in zip(masked.masks, new)]
    pruned_values = [torch.where(d, p, v) for d, p, v in zip(dropped, masked.params, pruned_values)]
    if revive == "original":
        for p, r, v in zip(masked.params, revived, pruned_values):  # no foreach `where`
            p.copy_(torch.where(r, v, p))
    masked.set_masks(new)
    masked.apply()
    return dropped, revived, pruned_values


def apply_unpruning(
    network: nn.Module,
    batches: list[tuple[Tensor, Tensor]],
    score: Union[str, ScoreFn] = "retain_magnitude",
    scope: Scope = "global",
    structured: Optional[bool] = None,
    revive: Revive = "original",
    values: Optional[Mapping[str, Tensor]] = None,
    parameters: ParameterFilter = None,
    lr: float = 0.01,
    gate: float = 0.05,
) -> dict[str, Tensor]:
    """Re-derives the topology of a sparse ``network`` from retained data only, in place, once,
    and returns the new kept masks by name.

    The current topology is read from the weights (zeros, and ``torch.nn.utils.prune`` masks);
    every selected weight is scored on ``batches`` (:func:`unpruning_scores`; pruned weights at
    their values before pruning: ``values``, else what ``weight_orig`` still holds under
    ``torch.nn.utils.prune``, else 0), the top-scored ones at the same sparsity are kept
    (:func:`unpruned_masks`) and the weights swapped (:func:`swap_topology`). Pruned weights of
    unknown value score 0 under ``"retain_magnitude"`` and ``"taylor"`` and cannot come back:
    pass ``values`` or use ``score="gradient"``. Nothing keeps pruned weights at zero afterwards
    (see :class:`~lightning_unlearn.functional.MaskedParameters`).

    Example::

        dense = {n: p.detach().clone() for n, p in net.named_parameters()}
        apply_pruning(net, amount=0.9)                    # the pipeline, with all the data
        apply_unpruning(net, retained_batches, values=dense)

    Args:
        network: the sparse network.
        batches: retained ``(x, y)`` batches on the network's device.
        score: a name in :data:`UNPRUNING_SCORES`, a dotted path or a score function.
        scope: keep the count of kept units over all tensors (``"global"``) or per tensor (``"layer"``).
        structured: rank whole rows (``None``: when the topology prunes whole rows only).
        revive: revived weights take their remembered value (``"original"``) or 0 (``"zero"``).
        values: the weights before pruning by parameter name (e.g. a copy of the dense network's
            parameters); only their pruned entries are read.
        parameters: regex(es) over parameter names (default: conv and linear weights).
        lr: step size of ``magnitude_after_finetune``.
        gate: the usage gate of ``retain_magnitude``.

    Raises:
        ValueError: invalid arguments, no pruned weight, or no batch.
    """
    check_scope(scope)
    check_choice(revive, "revive", REVIVE)
    if not batches:
        raise ValueError("`batches` is empty: un-pruning scores the weights on at least one retained (x, y) batch.")
    named = select_parameters(network, parameters, prunable_weights(network))
    names, params = [n for n, _ in named], [p for _, p in named]
    masks = sparse_masks(network, named)
    if all(bool(m.all()) for m in masks):
        raise ValueError("The selected weights hold no pruned entry: prune the network first (e.g. apply_pruning).")
    known = {} if values is None else dict(values)
    pruned_values = [(known[n].detach().to(p) if n in known else p.detach()) * ~m for n, p, m in zip(names, params, masks)]
    if isinstance(score, str) and score in ("retain_magnitude", "taylor") and not any(bool(v.any()) for v in pruned_values):
        warnings.warn(
            f"apply_unpruning(score={score!r}) does not know the values of the pruned weights (0), so they score 0 and"
            " cannot come back; pass `values` (the weights before pruning) or use score='gradient'.",
            stacklevel=2,
        )
    structured = is_row_structured(masks) if structured is None else bool(structured)
    masked = MaskedParameters(names, params, masks)
    masked.set_anchor_zero()
    scores = unpruning_scores(score, network, names, params, masked.masks, pruned_values, batches, lr, gate)
    swap_topology(masked, unpruned_masks(scores, masked.masks, scope, structured), pruned_values, revive)
    sync_prune_buffers(network, masked)
    return masked.by_name()
