"""`MagnitudePruning`: prune first, then unlearn (OMP, IMP, SynFlow or random; unstructured or structured).

Functional core usable in any loop: :func:`pruning_scores`, :func:`prune_to_density`,
:func:`synflow_masks` and :func:`apply_pruning`. Helpers shared with
:class:`~lightning_unlearn.callbacks.UnPruning`: :func:`settle_topology` (fit-start topology
changes run in a fixed order whatever the order of the callbacks), :func:`retain_batches`,
:func:`write_through` (keeps ``torch.nn.utils.prune`` buffers and other mask callbacks' anchors in
step with an edited topology) and the structured-unit helpers.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Any, ClassVar, Iterator, Literal, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import Parameter
from torch.utils.data import DataLoader, RandomSampler

from lightning_unlearn.callbacks.masking import (
    MaskedParameters,
    TopologyCallback,
    ParameterFilter,
    Scope,
    check_fraction,
    check_scope,
    select_parameters,
    topk_mask,
)
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.models.network import network_of
from lightning_unlearn.metrics.functional.topology import PRUNE_SUFFIX, prunable_weights
from lightning_unlearn.models.weights import load_weights
from lightning_unlearn.registry import register

Method = Literal["omp", "imp", "synflow", "random"]
METHODS = ("omp", "imp", "synflow", "random")


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
    return [u.reshape(t.shape[:1] + (1,) * (t.ndim - 1)).expand(t.shape).clone() if t.ndim else u.reshape(()) for u, t in zip(units, like)]


def top_units(scores: Sequence[Tensor], density: float, scope: Scope) -> list[Tensor]:
    """:func:`~lightning_unlearn.callbacks.masking.topk_mask`, extended to ``density == 0`` (keep nothing)."""
    if density <= 0:
        return [torch.zeros_like(s, dtype=torch.bool) for s in scores]
    return topk_mask(scores, density, scope)


# ---------------------------------------------------------------------------------- functional core
def pruning_scores(params: Sequence[Tensor], method: Method, seed: int = 0) -> list[Tensor]:
    """Per-entry pruning scores (higher = kept): ``|w|`` for OMP/IMP, seeded uniform noise for
    random pruning (drawn on the CPU, so identical on every device). SynFlow scores need the
    network: see :func:`synflow_masks`."""
    if method in ("omp", "imp"):
        return [p.detach().abs() for p in params]
    if method == "random":
        generator = torch.Generator().manual_seed(seed)
        return [torch.rand(p.shape, generator=generator).to(p.device) for p in params]
    raise ValueError(f"`method` must be one of {METHODS} (SynFlow through synflow_masks), got {method!r}.")


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
    for ``"layer"``). Ties: lower position first (see :func:`~lightning_unlearn.callbacks.masking.topk_mask`).

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
    """Runs a block with every submodule in eval mode, restoring each one's own mode afterwards."""
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
        n: t.detach().abs().double()
        for n, t in [*network.named_parameters(), *network.named_buffers()]
        if t.is_floating_point()
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
def apply_pruning(
    network: nn.Module,
    amount: float = 0.95,
    method: Method = "omp",
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
    prunes like ``"omp"`` here (one round); :class:`MagnitudePruning` spreads IMP rounds over
    training. Nothing keeps the weights at zero afterwards: train with the callback, or mask
    gradients yourself.

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
    """
    amount = check_fraction(amount, "amount")
    check_scope(scope)
    named = select_parameters(network, parameters, prunable_weights(network))
    kept = existing_masks(network, named)
    masks = _masks_at(network, named, kept, 1.0 - amount, method, scope, structured, seed, input_shape, amount, iterations)
    masked = MaskedParameters([n for n, _ in named], [p for _, p in named], masks)
    masked.set_anchor_zero()
    masked.apply()
    sync_prune_buffers(network, masked)
    return dict(zip(masked.names, masked.masks))


def _masks_at(
    network: nn.Module, named: Sequence[tuple[str, Tensor]], kept: Sequence[Tensor], density: float, method: str,
    scope: Scope, structured: bool, seed: int, input_shape: Optional[Sequence[int]], amount: float, iterations: int,
) -> list[Tensor]:
    if method == "synflow":
        if input_shape is None:
            raise ValueError("method='synflow' needs `input_shape` (one input without the batch dimension, e.g. [1, 8, 8]).")
        return synflow_masks(network, [n for n, _ in named], kept, amount, input_shape, scope, structured, iterations)
    params = [p * k for (_, p), k in zip(named, kept)]
    reduce = "l2" if method in ("omp", "imp") else "sum"
    return prune_to_density(pruning_scores(params, method, seed), kept, density, scope, structured, reduce)


# ---------------------------------------------------------------------------------- shared helpers
@torch.no_grad()
def sync_prune_buffers(network: nn.Module, masked: MaskedParameters) -> None:
    """Writes the masks into the ``weight_mask`` buffers of ``torch.nn.utils.prune`` reparametrisations,
    so ``weight = weight_orig * weight_mask`` follows the topology (e.g. after un-pruning revives weights)."""
    for name, mask in zip(masked.names, masked.masks):
        buffer = prune_reparametrisation(network, name)
        if buffer is not None:
            buffer.copy_(mask)


@torch.no_grad()
def write_through(trainer: L.Trainer, source: Any, changed: dict[int, Optional[Tensor]]) -> None:
    """After ``source`` edited weights out of band, makes the other mask callbacks agree with the edit.

    A callback holding a value anchor (frozen entries kept at their values, e.g. ``SaliencyMask``)
    takes the new values at the edited entries into its anchor, so its strict restore does not
    undo the edit. ``changed`` maps ``id(parameter)`` to a bool tensor of edited entries
    (``None``: every entry). Call it when no step is half-restored for the edited entries.
    """
    for callback in trainer.callbacks:
        masked = getattr(callback, "masked", None)
        if callback is source or not isinstance(masked, MaskedParameters) or masked.anchor is None:
            continue
        masked.anchor = list(masked.anchor)
        for i, p in enumerate(masked.params):
            if id(p) not in changed:
                continue
            where = changed[id(p)]
            fresh = p.detach() * ~masked.masks[i]
            masked.anchor[i] = fresh if where is None else torch.where(where, fresh, masked.anchor[i])


def retain_batches(trainer: L.Trainer, count: int, seed: int, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """Up to ``count`` batches ``(x, y)`` of retained data, on ``device``.

    From an :class:`~lightning_unlearn.data.UnlearningDataModule` on the trainer: a random subset
    of D_r (test-time transforms, evaluation batch size) drawn from a generator seeded by
    ``seed``. Otherwise: the first batches of the trainer's training data (a user module trains on
    retained data), read with torch's global random state restored afterwards.

    Raises:
        ValueError: no data, or batches that are not ``(x, y)`` pairs.
    """
    datamodule = getattr(trainer, "datamodule", None)
    with torch.random.fork_rng(devices=[]):
        if isinstance(datamodule, UnlearningDataModule):
            data = datamodule.split("retain", eval_transforms=True)
            sampler = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
            loader = DataLoader(data, batch_size=datamodule.eval_batch_size, sampler=sampler)
        else:
            loader = trainer.fit_loop._data_source.dataloader()
        out = []
        for batch in loader:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not isinstance(batch[0], Tensor):
                raise ValueError(
                    f"Scoring needs retained (x, y) batches, got {type(batch).__name__}: fit with an UnlearningDataModule"
                    " or a training loader of (x, y) pairs."
                )
            out.append((batch[0].to(device), batch[1].to(device)))
            if len(out) == count:
                break
    if not out:
        raise ValueError("The retained data yields no batch: scoring needs at least one.")
    return out


def batch_loss(network: nn.Module, weights: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of ``network`` with ``weights`` substituted (``functional_call``)."""
    logits = functional_call(network, weights, (x,))
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ValueError("Scoring needs a forward returning (batch, classes) logits; wrap the network so it does.")
    return F.cross_entropy(logits, y)


# ---------------------------------------------------------------------------------- the callback
@register(
    "magnitude_pruning", kind="callback",
    cost="once at fit start: a top-k over the selected weights (SynFlow: 100 F/B on one all-ones input);"
    " per step: one masked multiply + one restore",
    paper="Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023 (OPTML-Group/Unlearn-Sparse)",
)
class MagnitudePruning(TopologyCallback):
    r"""Prune first, then unlearn (Jia et al., NeurIPS 2023, "Model Sparsity Can Simplify Machine
    Unlearning"; code OPTML-Group/Unlearn-Sparse ``pruner/``, ``main_imp.py``, ``main_synflow.py``).

    Rule: at fit start, before any step, the selected weights are pruned to sparsity ``amount``
    and pruned weights are set to exactly 0; they stay exactly 0 through unlearning (the masking
    core masks their gradients and, ``strict``, puts them back to 0 and clears their optimiser
    state after every step, so neither weight decay nor momentum moves them). Methods:

    * ``"omp"``: one-shot magnitude pruning, keep the largest ``|w|`` (paper's main setting);
    * ``"imp"``: iterative magnitude pruning in ``rounds`` rounds, each pruning the fraction
      ``1 - (1 - amount) ** (1 / rounds)`` of the remaining weights, so that the final sparsity is
      ``amount``. The reference retrains the network between rounds; this callback lets the
      training it runs (the unlearning) do that: round ``r`` (0-based) prunes at the start of
      epoch ``floor(r * max_epochs / rounds)``, round 0 at fit start;
    * ``"synflow"``: data-free iterative SynFlow scores, 100 rounds, exponential schedule, BN
      in eval mode (:func:`synflow_masks`); the input shape comes from ``input_shape``,
      ``pl_module.example_input_array`` or one retained example;
    * ``"random"``: seeded random pruning.

    ``structured=True`` prunes whole conv filters / linear output rows (by their L2 norm for
    magnitude) and ``amount`` is then the fraction of rows pruned. ``scope="global"`` ranks
    across all selected tensors (the reference), ``"layer"`` within each. Weights that already
    carry ``torch.nn.utils.prune`` masks (``weight_orig * weight_mask``, e.g. from Lightning's
    ``ModelPruning``) are detected: their masked entries stay pruned, the callback works on
    ``weight_orig`` and keeps ``weight_mask`` equal to its mask (the final sparsity is then at
    least that of the existing masks).

    ``rewind`` (IMP's "rewind to early weights"): after a pruning round the whole network is
    reset to ``"start"`` (its weights at fit start, before pruning; one copy kept, checkpointed
    while rounds remain) or to the weights saved at a path, the mask re-applied and the
    optimiser's per-parameter state zeroed. With OMP and a path this is the reference recipe
    (prune the trained model, rewind to the epoch-8 checkpoint, train).

    Defaults: ``amount=0.95`` (the paper's 95 % sparse models), OMP, unstructured, global. The
    reference prunes Conv2d weights only; the default here is conv and linear weights. A regex in
    ``parameters`` selects among all trainable parameters by name, so the reference's selection
    is e.g. ``parameters=r"features\.\d+\.0\.weight"`` for SmallCNN or
    ``r"(conv\d|shortcut\.0)\.weight"`` for ResNet18. Composes with any method and with the other mask callbacks
    (pruning happens in ``on_fit_start``; they capture their anchors at ``on_train_start``);
    masks and the IMP schedule are checkpointed and resume exactly.
    Cost: a top-k at fit start (SynFlow: 100 forward/backward passes of one input); per step one
    masked multiply of the gradients and one restore. Data: none (SynFlow: the input shape).

    Args:
        amount: target sparsity, in (0, 1].
        method: ``"omp"``, ``"imp"``, ``"synflow"`` or ``"random"``.
        structured: prune whole filters / rows.
        scope: ``"global"`` or ``"layer"``.
        rounds: IMP rounds (only with ``method="imp"``).
        parameters: regex(es) selecting parameters by name (default: conv and linear weights).
        rewind: ``None``, ``"start"`` or the path of weights to rewind to after pruning.
        strict: restore pruned entries to 0 and clear their optimiser state after every step.
        seed: seed of random pruning.
        input_shape: SynFlow's input shape without the batch dimension.
        synflow_iterations: SynFlow rounds.

    Raises:
        ValueError: ``amount`` outside (0, 1], unknown ``method``/``scope``, ``rounds < 1`` or
            ``rounds > 1`` without IMP, a filter matching nothing, IMP rounds that do not fit in
            ``max_epochs``, a missing rewind file.

    Example::

        trainer = L.Trainer(max_epochs=10, callbacks=[MagnitudePruning(amount=0.95), UnlearningEvaluation()])
        trainer.fit(FineTune(model=net), datamodule=dm)   # OMP + FT
    """

    anchor: ClassVar[Literal["values", "zero"]] = "zero"

    def __init__(
        self,
        amount: float = 0.95,
        method: Method = "omp",
        structured: bool = False,
        scope: Scope = "global",
        rounds: int = 1,
        parameters: ParameterFilter = None,
        rewind: Optional[str] = None,
        strict: bool = True,
        seed: int = 0,
        input_shape: Optional[list[int]] = None,
        synflow_iterations: int = 100,
    ) -> None:
        super().__init__(parameters, strict)
        self.amount = check_fraction(amount, "amount")
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
        self.scope = check_scope(scope)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"`rounds` must be an integer >= 1, got {rounds!r}.")
        if rounds > 1 and method != "imp":
            raise ValueError(f"`rounds`={rounds} applies to method='imp' only; use method='imp' or rounds=1.")
        if isinstance(synflow_iterations, bool) or not isinstance(synflow_iterations, int) or synflow_iterations < 1:
            raise ValueError(f"`synflow_iterations` must be an integer >= 1, got {synflow_iterations!r}.")
        if input_shape is not None and (not input_shape or any(int(d) <= 0 for d in input_shape)):
            raise ValueError(f"`input_shape` must list positive sizes without the batch dimension, got {input_shape!r}.")
        self.method, self.structured, self.rounds, self.rewind, self.seed = method, bool(structured), rounds, rewind, seed
        self.input_shape = None if input_shape is None else [int(d) for d in input_shape]
        self.synflow_iterations = synflow_iterations
        self.rounds_done = 0
        #: Values of the pruned entries when they were pruned (kept when an UnPruning asks for them).
        self.keep_pruned_values = False
        self.pruned_values: Optional[list[Tensor]] = None
        self._start_state: Optional[dict[str, Tensor]] = None

    def key_args(self) -> dict[str, Any]:
        return {**super().key_args(), "amount": self.amount, "method": self.method, "structured": self.structured, "scope": self.scope}

    def selected(self, pl_module: L.LightningModule) -> list[tuple[str, Parameter]]:
        network = network_of(pl_module)
        return select_parameters(network, self.parameters, prunable_weights(network))

    # ------------------------------------------------------------------ schedule
    def round_epoch(self, index: int, max_epochs: int) -> int:
        """The epoch at whose start IMP round ``index`` (0-based) prunes."""
        return (index * max_epochs) // self.rounds

    def density_after(self, rounds: int) -> float:
        """Kept fraction after ``rounds`` rounds: ``(1 - amount) ** (rounds / self.rounds)``."""
        return (1.0 - self.amount) ** (rounds / self.rounds)

    # ------------------------------------------------------------------ hooks
    def check_setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().check_setup(trainer, pl_module)
        if self.rounds > 1:
            max_epochs = trainer.max_epochs
            if max_epochs is None or max_epochs < self.rounds:
                raise ValueError(
                    f"IMP prunes at the start of evenly spaced epochs: `rounds`={self.rounds} needs Trainer(max_epochs >= {self.rounds}),"
                    f" got max_epochs={max_epochs}."
                )
        if self.rewind not in (None, "start") and not os.path.isfile(self.rewind):
            raise ValueError(f"`rewind`={self.rewind!r} is neither None, 'start' nor an existing weights file.")

    def prepare_topology(self, trainer: L.Trainer, pl_module: L.LightningModule, fresh: bool) -> None:
        if fresh and self.rewind == "start" and self.rounds > 1:
            self._start_state = {k: v.detach().clone() for k, v in network_of(pl_module).state_dict().items()}

    def change_topology(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Prunes: the first (or only) round."""
        self.rounds_done = 1
        self._commit(trainer, pl_module, [torch.ones_like(m) for m in self.masked.masks], at_start=True)

    def build_masks(self, trainer: L.Trainer, pl_module: L.LightningModule, named: list[tuple[str, Parameter]]) -> list[Tensor]:
        return self._next_masks(trainer, pl_module, named, existing_masks(network_of(pl_module), named), 1)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.masked is None or self.rounds_done >= self.rounds:
            return
        if trainer.current_epoch < self.round_epoch(self.rounds_done, trainer.max_epochs):
            return
        before = [m.clone() for m in self.masked.masks]
        named = list(zip(self.masked.names, self.masked.params))
        self.masked.set_masks(self._next_masks(trainer, pl_module, named, before, self.rounds_done + 1))
        self.rounds_done += 1
        self._commit(trainer, pl_module, before, at_start=False)

    # ------------------------------------------------------------------ pruning
    def _next_masks(
        self, trainer: L.Trainer, pl_module: L.LightningModule, named: Sequence[tuple[str, Tensor]], kept: Sequence[Tensor], k: int
    ) -> list[Tensor]:
        shape = self._input_shape(trainer, pl_module) if self.method == "synflow" else None
        return _masks_at(
            network_of(pl_module), named, kept, self.density_after(k), self.method, self.scope, self.structured,
            self.seed, shape, self.amount, self.synflow_iterations,
        )

    @torch.no_grad()
    def _commit(self, trainer: L.Trainer, pl_module: L.LightningModule, before: list[Tensor], at_start: bool) -> None:
        """Pins the newly pruned entries at 0 (recording their values first when asked), keeps
        ``torch.nn.utils.prune`` buffers and other callbacks' anchors in step, rewinds if asked."""
        masked = self.masked
        newly = [b & ~m for b, m in zip(before, masked.masks)]
        if self.keep_pruned_values:
            if self.pruned_values is None:
                self.pruned_values = [torch.zeros_like(p) for p in masked.params]
            self.pruned_values = [torch.where(n, p.detach(), v) for n, p, v in zip(newly, masked.params, self.pruned_values)]
        masked.set_anchor_zero()
        masked.apply()
        network = network_of(pl_module)
        rewound = self._rewind(network) if not (at_start and self.rewind == "start") else False
        if rewound:
            masked.apply()
        sync_prune_buffers(network, masked)
        masked.restore_frozen(trainer.optimizers)
        if rewound:
            _zero_optimizer_state(trainer, network)
            write_through(trainer, self, {id(p): None for p in network.parameters()})
        else:
            write_through(trainer, self, {id(p): n for p, n in zip(masked.params, newly)})
        if self.rounds_done >= self.rounds:
            self._start_state = None

    def _rewind(self, network: nn.Module) -> bool:
        if self.rewind is None:
            return False
        if self.rewind == "start":
            network.load_state_dict(self._start_state)
        else:
            load_weights(network, self.rewind)
        return True

    def _input_shape(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[int]:
        if self.input_shape is not None:
            return self.input_shape
        example = getattr(pl_module, "example_input_array", None)
        if isinstance(example, Tensor):
            return list(example.shape[1:])
        x, _ = retain_batches(trainer, 1, self.seed, torch.device("cpu"))[0]
        return list(x.shape[1:])

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rounds_done = int(state_dict["rounds_done"])

    def extra_tensor_state(self) -> dict[str, Any]:
        return {"start_state": self._start_state} if self._start_state is not None else {}

    def load_extra_tensor_state(self, state: dict[str, Any]) -> None:
        self._start_state = state.get("start_state")

    def topology_masks(self) -> dict[str, Tensor]:
        """The kept masks (``True`` = kept) by parameter name, for the topology metrics."""
        return self.masks()


@torch.no_grad()
def _zero_optimizer_state(trainer: L.Trainer, network: nn.Module) -> None:
    """Zeroes every per-parameter tensor state (momentum, Adam moments) of ``network``'s parameters."""
    states = []
    for optimizer in trainer.optimizers:
        for p in network.parameters():
            states += [v for v in optimizer.state.get(p, {}).values() if isinstance(v, Tensor) and v.shape == p.shape]
    if states:
        torch._foreach_zero_(states)
