"""`MagnitudePruning`: prune first, then unlearn (OMP, IMP, SynFlow or random; unstructured or structured).

A thin Lightning adapter over :mod:`lightning_unlearn.functional.pruning`: the rule is a
:class:`~lightning_unlearn.functional.PruningRecipe`; this callback applies it at fit start (and at
the IMP round epochs), keeps pruned weights at exactly 0 through the shared masking adapter, and
takes part in the topology protocol of :class:`~lightning_unlearn.callbacks.masking.TopologyCallback`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Optional

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import Parameter

from lightning_unlearn.callbacks.masking import TopologyCallback
from lightning_unlearn.data.access import retain_batches
from lightning_unlearn.functional.masks import ParameterFilter, Scope, select_parameters
from lightning_unlearn.functional.pruning import (
    PruningMethod,
    PruningRecipe,
    existing_masks,
    prunable_weights,
    sync_prune_buffers,
)
from lightning_unlearn.models.network import network_of
from lightning_unlearn.models.weights import load_weights
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_choice, check_optional_path

Schedule = Literal["start", "lottery"]
SCHEDULES = ("start", "lottery")


# ---------------------------------------------------------------------------------- the callback
@register(
    "magnitude_pruning",
    kind="callback",
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
      epoch ``floor(r * max_epochs / rounds)``, round 0 at fit start (``schedule="start"``);
      with ``schedule="lottery"`` the fit is the whole lottery-ticket pipeline (Frankle & Carbin,
      ICLR 2019; the code the un-pruning paper builds its sparse models with,
      rahulvigneswaran/Lottery-Ticket-Hypothesis-in-Pytorch): nothing is pruned at fit start,
      the ``rounds + 1`` equal segments of ``max_epochs`` train, and round ``r`` (1-based)
      prunes at the start of epoch ``floor(r * max_epochs / (rounds + 1))``, after ``r``
      segments; with ``rewind="start"`` and ``scope="layer"`` this is "train, prune ``p`` % of
      each layer's remaining weights, rewind the survivors to the original initialisation",
      ``p = 1 - (1 - amount) ** (1 / rounds)``, and the last segment trains the final ticket.
      Deviations from that code: a constant rate per round reaching exactly ``amount`` (it prunes
      by the ``p``-th percentile of the alive magnitudes, so counts differ by rounding); pruned
      weights are frozen by their mask (it zeroes the gradients of every weight below 1e-6,
      which in its code also freezes all negative weights); the epochs per round are
      ``max_epochs / (rounds + 1)`` of one Lightning fit, with the optimiser's state reset at
      each rewind (it builds a new Adam per round; use a constant learning rate);
    * ``"synflow"``: data-free iterative SynFlow scores, 100 rounds, exponential schedule, BN
      in eval mode (:func:`~lightning_unlearn.functional.synflow_masks`); the input shape comes
      from ``input_shape``, ``pl_module.example_input_array`` or one retained example;
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
    optimiser's per-parameter state dropped (momentum, Adam moments and step count: as a new
    optimiser would start). With OMP and a path this is the reference recipe
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

    The rule itself is :attr:`recipe`, a :class:`~lightning_unlearn.functional.PruningRecipe`
    (the same masks without a trainer: :func:`~lightning_unlearn.functional.apply_pruning`); an
    :class:`~lightning_unlearn.callbacks.UnPruning` on the trainer reads it to prune a dense
    reference the same way.

    Args:
        amount: target sparsity, in (0, 1].
        method: ``"omp"``, ``"imp"``, ``"synflow"`` or ``"random"``.
        structured: prune whole filters / rows.
        scope: ``"global"`` or ``"layer"``.
        rounds: IMP rounds (only with ``method="imp"``).
        schedule: ``"start"`` (round 0 at fit start) or ``"lottery"`` (rounds after training
            segments: the lottery-ticket pipeline; only with ``method="imp"``).
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
        method: PruningMethod = "omp",
        structured: bool = False,
        scope: Scope = "global",
        rounds: int = 1,
        parameters: ParameterFilter = None,
        rewind: Optional[str] = None,
        strict: bool = True,
        seed: int = 0,
        input_shape: Optional[list[int]] = None,
        synflow_iterations: int = 100,
        schedule: Schedule = "start",
    ) -> None:
        super().__init__(parameters, strict)
        #: How this callback prunes (validated: amount, method, scope, rounds, shapes).
        self.recipe = PruningRecipe(amount, method, structured, scope, rounds, seed, input_shape, synflow_iterations)
        self.rewind = check_optional_path(
            rewind, "rewind", hint="None, 'start' or the path of weights to rewind to after pruning."
        )
        self.schedule = check_choice(
            schedule,
            "schedule",
            SCHEDULES,
            hint="'start' prunes the first round at fit start, 'lottery' prunes after each training segment (lottery tickets).",
        )
        if self.schedule == "lottery" and method != "imp":
            raise ValueError(f"schedule='lottery' is iterative magnitude pruning: use method='imp' (got method={method!r}).")
        self.rounds_done = 0
        self._start_state: Optional[dict[str, Tensor]] = None

    # the recipe's fields, read-only
    amount = property(lambda self: self.recipe.amount, doc="Target sparsity.")
    method = property(lambda self: self.recipe.method, doc="Pruning score: omp, imp, synflow or random.")
    structured = property(lambda self: self.recipe.structured, doc="Whether whole rows are pruned.")
    scope = property(lambda self: self.recipe.scope, doc="Ranking scope: global or layer.")
    rounds = property(lambda self: self.recipe.rounds, doc="IMP rounds.")
    seed = property(lambda self: self.recipe.seed, doc="Seed of random pruning.")

    def key_args(self) -> dict[str, Any]:
        keys = {
            **super().key_args(),
            "amount": self.amount,
            "method": self.method,
            "structured": self.structured,
            "scope": self.scope,
        }
        return keys if self.schedule == "start" else {**keys, "schedule": self.schedule}

    def pruning_recipe(self) -> PruningRecipe:
        return self.recipe

    def selected(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[tuple[str, Parameter]]:
        network = network_of(pl_module)
        return select_parameters(network, self.parameters, prunable_weights(network))

    # ------------------------------------------------------------------ schedule
    @property
    def lottery(self) -> bool:
        """Whether the rounds follow training segments (the lottery-ticket pipeline)."""
        return self.schedule == "lottery"

    def round_epoch(self, index: int, max_epochs: int) -> int:
        """The epoch at whose start IMP round ``index`` (0-based) prunes."""
        if self.lottery:
            return ((index + 1) * max_epochs) // (self.rounds + 1)
        return (index * max_epochs) // self.rounds

    def density_after(self, rounds: int) -> float:
        """Kept fraction after ``rounds`` rounds: ``(1 - amount) ** (rounds / self.rounds)``."""
        return self.recipe.density_after(rounds)

    # ------------------------------------------------------------------ hooks
    def check_setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().check_setup(trainer, pl_module)
        needed = self.rounds + 1 if self.lottery else self.rounds
        if needed > 1:
            max_epochs = trainer.max_epochs
            if max_epochs is None or max_epochs < needed:
                raise ValueError(
                    f"IMP prunes at the start of evenly spaced epochs: `rounds`={self.rounds} needs Trainer(max_epochs >= {needed}),"
                    f" got max_epochs={max_epochs}."
                )
        if self.rewind not in (None, "start") and not os.path.isfile(self.rewind):
            raise ValueError(f"`rewind`={self.rewind!r} is neither None, 'start' nor an existing weights file.")

    def prepare_topology(self, trainer: L.Trainer, pl_module: L.LightningModule, fresh: bool) -> None:
        if fresh and self.rewind == "start" and (self.rounds > 1 or self.lottery):
            self._start_state = {k: v.detach().clone() for k, v in network_of(pl_module).state_dict().items()}

    def change_topology(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Prunes: the first (or only) round; nothing yet under the lottery schedule."""
        self.rounds_done = 0 if self.lottery else 1
        self._commit(trainer, pl_module, [torch.ones_like(m) for m in self._masked.masks], at_start=True)

    def build_masks(self, trainer: L.Trainer, pl_module: L.LightningModule, named: list[tuple[str, Parameter]]) -> list[Tensor]:
        kept = existing_masks(network_of(pl_module), named)
        return kept if self.lottery else self._next_masks(trainer, pl_module, named, kept, 1)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.masked is None or self.rounds_done >= self.rounds:
            return
        assert trainer.max_epochs is not None  # Lightning resolves None (1000, or -1 with max_steps)
        if trainer.current_epoch < self.round_epoch(self.rounds_done, trainer.max_epochs):
            return
        before = [m.clone() for m in self.masked.masks]
        named = list(zip(self.masked.names, self.masked.params))
        self.masked.set_masks(self._next_masks(trainer, pl_module, named, before, self.rounds_done + 1))
        self.rounds_done += 1
        self._commit(trainer, pl_module, before, at_start=False)

    # ------------------------------------------------------------------ pruning
    def _next_masks(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        named: Sequence[tuple[str, Tensor]],
        kept: Sequence[Tensor],
        k: int,
    ) -> list[Tensor]:
        shape = self._input_shape(trainer, pl_module) if self.method == "synflow" else None
        return self.recipe.masks(
            [p for _, p in named],
            kept,
            self.density_after(k),
            network=network_of(pl_module),
            names=[n for n, _ in named],
            input_shape=shape,
        )

    @torch.no_grad()
    def _commit(self, trainer: L.Trainer, pl_module: L.LightningModule, before: list[Tensor], at_start: bool) -> None:
        """Pins the newly pruned entries at 0 (recording their values first when asked), keeps
        ``torch.nn.utils.prune`` buffers and other callbacks' anchors in step, rewinds if asked."""
        masked = self._masked
        newly = [b & ~m for b, m in zip(before, masked.masks)]
        self.remember_pruned(newly)
        masked.set_anchor_zero()
        masked.apply()
        network = network_of(pl_module)
        rewound = False if at_start and (self.rewind == "start" or self.lottery) else self._rewind(network)
        if rewound:
            masked.apply()
        sync_prune_buffers(network, masked)
        masked.restore_frozen(trainer.optimizers)
        if rewound:
            reset_optimizer_state(trainer.optimizers, list(network.parameters()))
            self.write_through(trainer, {id(p): None for p in network.parameters()})
        else:
            self.write_through(trainer, {id(p): n for p, n in zip(masked.params, newly)})
        if self.rounds_done >= self.rounds:
            self._start_state = None

    def _rewind(self, network: nn.Module) -> bool:
        if self.rewind is None:
            return False
        if self.rewind == "start":
            assert self._start_state is not None  # saved at fit start
            network.load_state_dict(self._start_state)
        else:
            load_weights(network, self.rewind)
        return True

    def _input_shape(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[int]:
        if self.recipe.input_shape is not None:
            return list(self.recipe.input_shape)
        example = getattr(pl_module, "example_input_array", None)
        if isinstance(example, Tensor):
            return list(example.shape[1:])
        x, _ = retain_batches(trainer, 1, self.seed, torch.device("cpu"), who="MagnitudePruning(method='synflow')")[0]
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


def reset_optimizer_state(optimizers: Sequence[torch.optim.Optimizer], params: Sequence[Tensor]) -> None:
    """Drops the per-parameter state of ``params`` (momentum buffers, Adam moments and step
    counts), so the next step starts them afresh, as a new optimiser would (for SGD the same as
    zeroing the momentum buffer)."""
    for optimizer in optimizers:
        for p in params:
            optimizer.state.pop(p, None)
