"""`UnPruning`: re-derive a sparse model's topology from the retained data only (our design).

A thin Lightning adapter over :mod:`lightning_unlearn.functional.unpruning` (scores, the
retain-driven topology, the swap). Pruning callbacks on the trainer are found and updated through
the :class:`~lightning_unlearn.callbacks.masking.TopologyCallback` protocol
(:func:`~lightning_unlearn.callbacks.masking.pruning_callbacks`): their
:class:`~lightning_unlearn.functional.PruningRecipe`, the values of the weights they pruned, and
:meth:`~lightning_unlearn.callbacks.masking.TopologyCallback.adopt_topology`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.nn import Parameter

from lightning_unlearn.callbacks.masking import TopologyCallback, pruning_callbacks
from lightning_unlearn.data.access import retain_batches
from lightning_unlearn.functional.masks import ParameterFilter, Scope, check_scope, pack_mask, select_parameters, unpack_mask
from lightning_unlearn.functional.pruning import canonical_name, prunable_weights, sync_prune_buffers
from lightning_unlearn.functional.unpruning import (
    REVIVE,
    Revive,
    is_row_structured,
    regrow_toward,
    resolve_score,
    sparse_masks,
    swap_topology,
    unpruned_masks,
    unpruning_scores,
)
from lightning_unlearn.metrics.functional.topology import weights_from_state_dict
from lightning_unlearn.models.network import network_of
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_choice, check_float, check_fraction, check_int, check_optional_path

Mode = Literal["one_shot", "gradual"]
MODES = ("one_shot", "gradual")


# ---------------------------------------------------------------------------------- the callback
@register(
    "unpruning", kind="callback",
    cost="one-shot: `batches` F/B on D_r once at fit start; gradual: the same every `update_every` steps;"
    " per step: one masked multiply + one restore",
    paper="Xiao et al., The Right to be Forgotten in Pruning, arXiv 2507.18725 (workflow; the scoring rule here is our design)",
)
class UnPruning(TopologyCallback):
    """Un-pruning: the sparse topology is re-derived from the retained data only, so that the
    deleted data no longer decides which weights survive.

    Paper: Xiao et al., "The Right to be Forgotten in Pruning: Unveil Machine Unlearning on Sparse
    Models" (arXiv 2507.18725). The paper shows that deleted data shapes the pruning mask and
    proposes to approximate "the pruned topology driven by retained data", for structured and
    unstructured sparsity, with any unlearning method. Its update rule is NOT public (the public
    repository NKUShaw/SparseModels lacks it); THE RULE BELOW IS OUR DESIGN
    (ALGORITHMS.md §1), not a reproduction.

    Rule: take the current mask ``M`` at sparsity ``s`` (from the pruning callbacks on the
    trainer, e.g. :class:`~lightning_unlearn.callbacks.MagnitudePruning`, else the zeros and
    ``torch.nn.utils.prune`` masks of the weights);
    score every prunable weight on retained data only, over ``batches`` random retain batches
    (BatchNorm in eval mode; pruned weights scored at their values before pruning when known);
    build ``M'`` = the top ``1 - s`` by score at the same sparsity and scope (for structured masks
    rows are ranked by their summed score). Then

    * ``mode="one_shot"``: at fit start, before any step, ``M <- M'``: dropped weights are set to
      0, revived weights to their value before pruning (``revive="original"``, else 0);
    * ``mode="gradual"``: every ``update_every`` optimiser steps until ``stop_fraction`` of the
      run, re-score at the current weights and move ``turnover`` of the way: of the ``d`` kept
      weights outside ``M'`` the ``ceil(turnover * d)`` lowest-scored are dropped and as many of
      ``M'``'s highest-scored pruned weights regrown (a prune-and-regrow interleaved with the
      unlearning method; "can be seen as a regularisation").

    Scores (``u = mean_b |g_b|``, the retain usage of a weight; ``g_b`` per-batch gradients of
    the cross-entropy on D_r):

    * ``"retain_magnitude"`` (default): ``|w| * u / (u + gate * mean(u))`` (mean per tensor):
      the pipeline's magnitude ranking wherever D_r uses a weight, ~0 where it does not (a retrain
      on D_r would not have grown it). Conservative: moves the topology only where the retained
      data disagrees with it;
    * ``"taylor"``: ``mean_b |w * g_b|``, the first-order loss change on D_r (Molchanov et al.
      2019 with per-batch absolute values); re-ranks every weight by retain importance;
    * ``"gradient"``: ``u`` itself; revives pruned weights even when their values before pruning
      are unknown (the two above score those 0: they cannot come back);
    * ``"magnitude_after_finetune"``: ``|w|`` after ``batches`` dense SGD steps of size ``lr``
      on D_r; weakest at dropping weights only D_f used (D_r gives them no gradient);
    * a dotted path to ``f(ScoreContext) -> list[Tensor]`` (see :class:`ScoreContext`).

    Observed (tests and digits): on data built so that the forget set alone drives some weights,
    every score but ``magnitude_after_finetune`` recovers the retain-only reference exactly (IoU
    0.52 -> 1.0). On digits (forget class 3, SmallCNN, 80 % OMP) the original mask's IoU with the
    retrain-then-prune reference is 0.55 and comes mostly from the shared initialisation (a
    retrain from another seed shares 0.19 with it): ``retain_magnitude`` keeps about 0.53-0.54,
    ``taylor`` drops to about 0.39, ``gradient`` to about 0.19. Only where deleted data really
    decides weights does un-pruning move towards the reference; elsewhere prefer the default.

    The mask keeps being enforced (pruned weights exactly 0, strict freeze through the masking
    core) and written into the pruning callbacks (:meth:`TopologyCallback.adopt_topology`) and
    ``weight_mask`` buffers; other mask callbacks' anchors follow the edited weights. The rule is
    :mod:`lightning_unlearn.functional.unpruning` (without a trainer:
    :func:`~lightning_unlearn.functional.apply_unpruning`); pruning callbacks are found through the
    :class:`~lightning_unlearn.callbacks.masking.TopologyCallback` protocol, never by their class.

    Defaults are ours (no published values): ``retain_magnitude`` with ``gate=0.05`` on 8 retain
    batches, one-shot swap at fit start, revive at the pre-pruning values. Cost: ``batches``
    forward/backward passes on D_r per re-derivation (once, or every ``update_every`` steps); per
    step one masked multiply and one restore. Data: D_r (an
    :class:`~lightning_unlearn.data.UnlearningDataModule`'s retain split, else the trainer's
    training data). Metrics: the topology gap to the retain-only reference (``reference``: a
    checkpoint of a model trained on D_r only, e.g. a Retrain run, pruned by the same pipeline or
    left dense to be pruned here the same way, see :meth:`topology_reference`) via
    :func:`~lightning_unlearn.metrics.topology_report`.

    Args:
        score: ``"retain_magnitude"``, ``"taylor"``, ``"gradient"``, ``"magnitude_after_finetune"``
            or a dotted path.
        mode: ``"one_shot"`` or ``"gradual"``.
        batches: retain batches per scoring.
        scope: ``"global"`` or ``"layer"`` (default: the pruning callback's, else global).
        structured: rank rows (default: the pruning callback's, else detected from the mask).
        revive: initial value of revived weights, ``"original"`` (before pruning, 0 if unknown) or ``"zero"``.
        update_every: optimiser steps between gradual updates.
        turnover: fraction of the remaining topology difference moved per gradual update, in (0, 1].
        stop_fraction: gradual updates stop after this fraction of the run's steps, in (0, 1].
        lr: step size of ``"magnitude_after_finetune"``.
        gate: relative usage below which ``"retain_magnitude"`` discounts a weight.
        reference: path of the retain-only reference model (sparse, or dense: pruned the same
            way), for the topology metrics.
        seed: seed of the retain batches (update ``t`` draws with ``(seed, t)``: exact resume).
        parameters: regex(es) selecting the weights (default: those of the pruning callbacks,
            else conv and linear weights).
        strict: restore pruned entries to 0 and clear their optimiser state after every step.

    Raises:
        ValueError: unknown ``score``/``mode``/``scope``/``revive``, a fraction outside (0, 1],
            non-positive counts, a missing reference file; at setup, an IMP pruning callback with
            several rounds (the topology must be fixed before un-pruning); at fit start, a model
            with no pruned weight.

    Example::

        callbacks = [MagnitudePruning(amount=0.9), UnPruning(), UnlearningEvaluation()]
        L.Trainer(max_epochs=5, callbacks=callbacks).fit(RandomLabel(model=net), datamodule=dm)
    """

    anchor: ClassVar[Literal["values", "zero"]] = "zero"
    topology_stage: ClassVar[int] = 1

    def __init__(
        self,
        score: str = "retain_magnitude",
        mode: Mode = "one_shot",
        batches: int = 8,
        scope: Optional[Scope] = None,
        structured: Optional[bool] = None,
        revive: Revive = "original",
        update_every: int = 50,
        turnover: float = 0.5,
        stop_fraction: float = 0.8,
        lr: float = 0.01,
        gate: float = 0.05,
        reference: Optional[str] = None,
        seed: int = 0,
        parameters: ParameterFilter = None,
        strict: bool = True,
    ) -> None:
        super().__init__(parameters, strict)
        self.score_fn = resolve_score(score)
        self.score = score
        self.mode = check_choice(
            mode, "mode", MODES, hint="'one_shot' swaps the topology at fit start, 'gradual' moves it every `update_every` steps."
        )
        self.scope = None if scope is None else check_scope(scope)
        self.structured = structured
        self.revive = check_choice(revive, "revive", REVIVE, hint="'original' revives weights at their values before pruning, 'zero' at 0.")
        self.batches = check_int(batches, "batches", minimum=1, hint="the number of retain batches each scoring reads.")
        self.update_every = check_int(update_every, "update_every", minimum=1, hint="optimiser steps between two gradual updates.")
        self.lr = check_float(lr, "lr", minimum=0.0, open_minimum=True)
        self.gate = check_float(gate, "gate", minimum=0.0, open_minimum=True)
        self.reference = check_optional_path(reference, "reference", hint="a model trained on the retained data only, or None.")
        self.seed = check_int(seed, "seed")
        self.turnover = check_fraction(turnover, "turnover")
        self.stop_fraction = check_fraction(stop_fraction, "stop_fraction")
        self.updates = 0
        self._resolved: dict[str, Any] = {}
        self._before: Optional[list[Tensor]] = None
        self._pruned_values: Optional[list[Tensor]] = None
        self._reference: Optional[dict[str, Tensor]] = None
        self._trainer: Optional[L.Trainer] = None

    def key_args(self) -> dict[str, Any]:
        return {**super().key_args(), "score": self.score, "mode": self.mode}

    # ------------------------------------------------------------------ selection
    def selected(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[tuple[str, Parameter]]:
        prunings = pruning_callbacks(trainer)
        if self.parameters is None and prunings:
            named: dict[str, Parameter] = {}
            for pruning in prunings:
                named.update(pruning.selected(trainer, pl_module))
            return list(named.items())
        network = network_of(pl_module)
        return select_parameters(network, self.parameters, prunable_weights(network))

    # ------------------------------------------------------------------ hooks
    def check_setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().check_setup(trainer, pl_module)
        self._reference, self._trainer = None, trainer
        for pruning in pruning_callbacks(trainer):
            recipe = pruning.pruning_recipe()
            if recipe.rounds > 1:
                raise ValueError(
                    f"UnPruning re-derives a fixed sparse topology, but {type(pruning).__name__}(method={recipe.method!r},"
                    f" rounds={recipe.rounds}) keeps pruning during training: use rounds=1 (or prune in an earlier run)."
                )
            pruning.record_pruned_values()
        if self.reference is not None and not os.path.isfile(self.reference):
            raise ValueError(
                f"`reference`={self.reference!r} does not exist: save a model trained on the retained data only"
                " there (e.g. run configs/digits/retrain.yaml) or leave it None."
            )

    def change_topology(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Reads the topology and swaps it (one-shot) on a fresh run."""
        self.masked.set_anchor_zero()
        self._before = [m.clone() for m in self.masked.masks]
        self._resolve(trainer)
        if self.mode == "one_shot":
            self._update(trainer, pl_module, 1.0, step=0)

    def build_masks(self, trainer: L.Trainer, pl_module: L.LightningModule, named: list[tuple[str, Parameter]]) -> list[Tensor]:
        masks_by_name: dict[str, Tensor] = {}
        values_by_name: dict[str, Tensor] = {}
        for pruning in pruning_callbacks(trainer):
            values = pruning.pruned_values() or [None] * len(pruning.masks())
            for (name, mask), value in zip(pruning.masks().items(), values):
                masks_by_name[name] = masks_by_name[name] & mask if name in masks_by_name else mask.clone()
                if value is not None:
                    values_by_name[name] = value
        masks = [masks_by_name.get(name, own) for (name, _), own in zip(named, sparse_masks(network_of(pl_module), named))]
        # Pruned entries keep their values before pruning: recorded by the pruning callbacks, or still in a
        # torch.nn.utils.prune `weight_orig`; entries pruned by zeros are 0 (unknown).
        self._pruned_values = [values_by_name.get(n, p.detach() * ~m) for (n, p), m in zip(named, masks)]
        if all(bool(m.all()) for m in masks):
            raise ValueError(
                "UnPruning found no pruned weight among the selected parameters: put MagnitudePruning on the trainer"
                " or load a sparse model (zeros or torch.nn.utils.prune masks)."
            )
        if self.score in ("retain_magnitude", "taylor") and not any(bool(v.any()) for v in self._pruned_values):
            rank_zero_warn(
                f"UnPruning(score={self.score!r}) does not know the values of the pruned weights (0), so they score 0 and"
                " cannot come back; use score='gradient', or prune with MagnitudePruning in the same run."
            )
        return masks

    def after_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.mode != "gradual":
            return
        step = trainer.global_step
        if step % self.update_every or step > self.stop_fraction * trainer.estimated_stepping_batches:
            return
        self._update(trainer, pl_module, self.turnover, step)

    # ------------------------------------------------------------------ un-pruning
    def _resolve(self, trainer: L.Trainer) -> None:
        recipes = [cb.pruning_recipe() for cb in pruning_callbacks(trainer)]
        scope = self.scope or (recipes[0].scope if recipes else "global")
        structured = self.structured
        if structured is None:
            structured = recipes[0].structured if recipes else is_row_structured(self.masked.masks)
        self._resolved = {"scope": scope, "structured": bool(structured)}

    def scores(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> list[Tensor]:
        """Retain-only scores of the selected weights at the current state (same on every DDP rank)."""
        masked = self.masked
        batches = retain_batches(trainer, self.batches, self.seed * 1_000_003 + step, pl_module.device, who="UnPruning")
        scores = unpruning_scores(
            self.score_fn, network_of(pl_module), masked.names, masked.params, masked.masks, self._pruned_values, batches,
            self.lr, self.gate,
        )
        return [trainer.strategy.reduce(s, reduce_op="mean") for s in scores]

    def _update(self, trainer: L.Trainer, pl_module: L.LightningModule, turnover: float, step: int) -> None:
        masked, scope, structured = self.masked, self._resolved["scope"], self._resolved["structured"]
        scores = self.scores(trainer, pl_module, step)
        target = unpruned_masks(scores, masked.masks, scope, structured)
        new = target if turnover >= 1.0 else regrow_toward(masked.masks, target, scores, turnover, scope, structured)
        self._swap(trainer, pl_module, new)
        self.updates += 1

    @torch.no_grad()
    def _swap(self, trainer: L.Trainer, pl_module: L.LightningModule, new: list[Tensor]) -> None:
        masked = self.masked
        dropped, revived, self._pruned_values = swap_topology(masked, new, self._pruned_values, self.revive)
        by_name = masked.by_name()
        for pruning in pruning_callbacks(trainer):
            pruning.adopt_topology(by_name)
        sync_prune_buffers(network_of(pl_module), masked)
        masked.restore_frozen(trainer.optimizers)
        self.write_through(trainer, {id(p): d | r for p, d, r in zip(masked.params, dropped, revived)})

    # ------------------------------------------------------------------ state and metrics
    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "resolved": dict(self._resolved)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict["updates"])
        self._resolved = dict(state_dict["resolved"])

    def extra_tensor_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"before": [pack_mask(m) for m in self._before or []]}
        if self.mode == "gradual":
            state["pruned_values"] = [v.detach().clone() for v in self._pruned_values]
        return state

    def load_extra_tensor_state(self, state: dict[str, Any]) -> None:
        params = self.masked.params
        self._before = [unpack_mask(b, p.shape, p.device) for b, p in zip(state["before"], params)] or None
        values = state.get("pruned_values")
        self._pruned_values = None if values is None else [v.to(p.device, p.dtype) for v, p in zip(values, params)]

    def topology_masks(self) -> dict[str, Tensor]:
        """The kept masks after un-pruning, by parameter name."""
        return self.masks()

    def topology_before(self) -> Optional[dict[str, Tensor]]:
        """The kept masks before un-pruning (the topology the deleted data helped shape)."""
        return None if self._before is None or self.masked is None else dict(zip(self.masked.names, self._before))

    def topology_reference(self) -> Optional[dict[str, Tensor]]:
        """The retain-only reference topology, from the model saved at ``reference`` (``None`` if not given).

        A sparse reference (as sparse as the current topology) gives its own mask. A dense one
        (e.g. a plain Retrain checkpoint) is pruned here the way this run's topology was: with the
        :class:`~lightning_unlearn.functional.PruningRecipe` of the first pruning callback on the
        trainer (magnitude and random pruning; a dense reference with SynFlow is reported as
        missing, with a warning), else by magnitude at the current mask's sparsity and scope.
        """
        if self.reference is None or self.masked is None:
            return None
        if self._reference is None:
            self._reference = self._reference_topology()
        return self._reference

    def _reference_topology(self) -> Optional[dict[str, Tensor]]:
        weights = weights_from_state_dict(torch.load(self.reference, map_location="cpu", weights_only=True))
        names = [n for n in self.masked.names if canonical_name(n) in weights]
        if not names:
            raise ValueError(f"`reference`={self.reference!r} holds none of the pruned weights {self.masked.names[:5]}.")
        position = {n: i for i, n in enumerate(self.masked.names)}
        before = [self._before[position[n]] for n in names]
        w = [weights[canonical_name(n)].to(b.device) for n, b in zip(names, before)]
        kept = [t != 0 for t in w]
        if sum(int(k.sum()) for k in kept) <= sum(int(b.sum()) for b in before):
            return dict(zip(names, kept))
        recipes = [cb.pruning_recipe() for cb in pruning_callbacks(self._trainer)]
        if not recipes:
            masks = unpruned_masks([t.abs() for t in w], before, self._resolved["scope"], self._resolved["structured"])
        elif recipes[0].needs_network:
            rank_zero_warn(f"`reference`={self.reference!r} is dense: prune it with the same SynFlow run to get the reference topology.")
            return None
        else:
            masks = recipes[0].masks(w, kept)
        return dict(zip(names, masks))
