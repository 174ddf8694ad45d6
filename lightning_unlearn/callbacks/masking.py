"""The Lightning adapter shared by every mask-holding callback (SalUn saliency, dynamic masks,
pruning, un-pruning), over :mod:`lightning_unlearn.functional.masks`.

:class:`MaskedUpdateCallback` masks gradients in ``on_before_optimizer_step``, restores frozen
entries after each optimiser step, and saves/restores masks and anchors in checkpoints; its
subclasses only decide how the masks are built (:meth:`MaskedUpdateCallback.build_masks`) and,
optionally, how they evolve. :class:`TopologyCallback` adds the fit-start topology changes
(pruning, then un-pruning, whatever the order of the callbacks) and the small protocol by which
an un-pruning callback finds and updates pruning callbacks without importing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.nn import Parameter
from torch.optim import Optimizer

from lightning_unlearn.functional.masks import MaskedParameters, ParameterFilter, select_parameters, write_through
from lightning_unlearn.functional.pruning import PruningRecipe
from lightning_unlearn.models.network import network_of


# ---------------------------------------------------------------------------------- the adapter
def settle_topology(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Runs the fit-start topology changes of every callback on the trainer, pruning before
    un-pruning, whatever the order of the callbacks (each runs once per fit).

    A callback takes part with ``topology_stage`` (an int: lower runs first) and ``settle(trainer,
    pl_module)``. Mask callbacks that read the weights at fit start (e.g. a saliency computed on
    the pruned model) call this first.
    """
    stages = [cb for cb in trainer.callbacks if isinstance(getattr(cb, "topology_stage", None), int) and hasattr(cb, "settle")]  # type: ignore[attr-defined]
    for callback in sorted(stages, key=lambda cb: cb.topology_stage):
        callback.settle(trainer, pl_module)


class MaskedUpdateCallback(Callback):
    """Base of every mask-holding callback: only weights whose mask is ``True`` may change.

    Lifecycle:

    * ``setup``: :meth:`check_setup` (fail before any weight changes);
    * ``on_fit_start`` (fresh run): selects the parameters of the network (``pl_module.model``
      when it exists, else ``pl_module``) and calls :meth:`build_masks`; on resume the masks come
      from the checkpoint instead;
    * ``on_train_start`` (after every callback's ``on_fit_start``, so after pruning zeroed its
      weights): captures the anchor (:attr:`anchor` = ``"values"``) or pins frozen weights at
      zero (``"zero"``) — unless resumed from a checkpoint, which holds the anchor;
    * ``on_before_optimizer_step`` (after AMP unscaling and DDP all-reduce): gradients of frozen
      entries are zeroed (subclasses may first read the raw gradients in :meth:`before_masking`);
    * ``on_train_batch_end`` once the optimiser step happened (``global_step`` advanced, so
      correct under gradient accumulation): with ``strict`` the frozen entries are put back to
      their anchor and their optimiser state zeroed; then :meth:`after_step` (mask updates).

    Stacked mask callbacks each enforce their own mask; the effective mask is the intersection.
    Masks and anchors are saved under the callback's ``state_key`` in checkpoints (masks
    bit-packed) and restored exactly.

    Args:
        parameters: regex(es) selecting the parameters by name (see :func:`~lightning_unlearn.functional.select_parameters`);
            ``None``: the subclass's default selection (:meth:`default_parameters`).
        strict: restore frozen entries and clear their optimiser state after every step.
    """

    anchor: ClassVar[Literal["values", "zero"]] = "values"
    checkpoint_key: ClassVar[str] = "lightning_unlearn_masks"

    def __init__(self, parameters: ParameterFilter = None, strict: bool = True) -> None:
        if parameters is not None and not isinstance(parameters, (str, list, tuple)):
            raise ValueError(
                f"`parameters` must be a regex, a list of regexes or None, got {parameters!r} ({type(parameters).__name__}):"
                r" e.g. r'fc\d\.weight' or ['conv', 'fc2']."
            )
        self.parameters = list(parameters) if isinstance(parameters, tuple) else parameters
        self.strict = bool(strict)
        self.masked: Optional[MaskedParameters] = None
        self._loaded: Optional[dict[str, Any]] = None
        self._last_step: Optional[int] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(**self.key_args())

    def key_args(self) -> dict[str, Any]:
        """The arguments that tell two instances of this callback apart in a checkpoint."""
        return {"parameters": self.parameters, "strict": self.strict}

    # ------------------------------------------------------------------ what subclasses write
    def default_parameters(self, name: str, param: Parameter) -> bool:
        """Default selection when ``parameters`` is None: every trainable parameter."""
        return True

    def check_setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Validation at ``setup("fit")``, before any weight changes."""

    def build_masks(self, trainer: L.Trainer, pl_module: L.LightningModule, named: list[tuple[str, Parameter]]) -> list[Tensor]:
        """The initial boolean masks of the selected parameters (fresh runs only, at fit start)."""
        raise NotImplementedError

    def before_masking(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Called in ``on_before_optimizer_step`` with the raw gradients, before masking (check
        :func:`grads_finite` before updating any state from them)."""

    def after_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Called once per optimiser step, after the strict restore."""

    def enforce_strict(self, trainer: L.Trainer) -> bool:
        """Whether to restore frozen entries after this step (default: ``strict``)."""
        return self.strict

    def extra_tensor_state(self) -> dict[str, Any]:
        """Additional tensors to checkpoint (accumulators); restored by :meth:`load_extra_tensor_state`."""
        return {}

    def load_extra_tensor_state(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`extra_tensor_state` saved (called at fit start, parameters known)."""

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.selected(trainer, pl_module)  # fail early on a filter matching nothing
            self.check_setup(trainer, pl_module)

    def selected(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[tuple[str, Parameter]]:
        """The ``(name, parameter)`` pairs of the network this callback masks."""
        return select_parameters(network_of(pl_module), self.parameters, self.default_parameters)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(self, "topology_stage", None) is None:
            settle_topology(trainer, pl_module)  # masks are built on the pruned network, whatever the order
        if self._loaded is not None:
            self.masked = MaskedParameters.from_state_dict(network_of(pl_module), self._loaded["masks"])
            self.load_extra_tensor_state(self._loaded)
            self._loaded = None
            return
        named = self.selected(trainer, pl_module)
        masks = self.build_masks(trainer, pl_module, named)
        self.masked = MaskedParameters([n for n, _ in named], [p for _, p in named], masks)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        if self.masked is None or self.masked.has_anchor:
            return
        if self.anchor == "zero":
            self.masked.set_anchor_zero()
            self.masked.apply()
        else:
            self.masked.capture_anchor()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        if self.masked is None:
            return
        self.before_masking(trainer, pl_module)
        self.masked.mask_gradients()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.masked is None or trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        if self.enforce_strict(trainer):
            self.masked.restore_frozen(trainer.optimizers)
        self.after_step(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.masked is not None:
            state = {"masks": self.masked.state_dict(), **self.extra_tensor_state()}
            checkpoint.setdefault(self.checkpoint_key, {})[self.state_key] = state

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._loaded = checkpoint.get(self.checkpoint_key, {}).get(self.state_key)

    @property
    def density(self) -> Optional[float]:
        """Fraction of the selected weights allowed to change (``None`` before fit)."""
        return None if self.masked is None else self.masked.density()

    @property
    def _masked(self) -> MaskedParameters:
        """:attr:`masked` in the hooks that run once the masks are built (after ``setup``)."""
        if self.masked is None:
            raise RuntimeError(f"{type(self).__name__}: the masks are not built yet (the fit has not been set up).")
        return self.masked

    def masks(self) -> dict[str, Tensor]:
        """The current masks by parameter name (``True`` = may change)."""
        return {} if self.masked is None else self.masked.by_name()

    def write_through(self, trainer: L.Trainer, changed: Mapping[int, Optional[Tensor]]) -> None:
        """After this callback edited weights out of band, makes the other mask callbacks' value
        anchors agree with the edit (see :func:`~lightning_unlearn.functional.masks.write_through`;
        ``changed`` maps ``id(parameter)`` to the edited entries, ``None``: all)."""
        others = [
            cb.masked
            for cb in trainer.callbacks  # type: ignore[attr-defined]
            if cb is not self and isinstance(getattr(cb, "masked", None), MaskedParameters)
        ]
        write_through(others, changed)


def masked_parameters_of(trainer: L.Trainer) -> list[MaskedParameters]:
    """The masked parameters held by the mask callbacks on ``trainer`` (those that built their masks)."""
    return [cb.masked for cb in trainer.callbacks if isinstance(cb, MaskedUpdateCallback) and cb.masked is not None]  # type: ignore[attr-defined]


class TopologyCallback(MaskedUpdateCallback):
    """Base of the mask callbacks that change the network's topology at fit start (pruning,
    un-pruning). They run in ``topology_stage`` order (lower first) whatever their order on the
    trainer, once per fit (:func:`settle_topology`), before any other mask callback builds its
    masks. Subclasses implement :meth:`change_topology` (fresh runs only; a resumed run restores
    the checkpointed masks instead) and, when needed, :meth:`prepare_topology`.

    The protocol between topology callbacks (an un-pruning callback finds the pruning callbacks
    with :func:`pruning_callbacks`, never by importing their classes):

    * :meth:`pruning_recipe`: how this callback prunes (a
      :class:`~lightning_unlearn.functional.PruningRecipe`), ``None`` when it does not prune;
    * :meth:`record_pruned_values` / :meth:`pruned_values`: asks it to remember the values of
      the weights it prunes (a pruning subclass calls :meth:`remember_pruned` before zeroing
      them), and reads them back;
    * :meth:`adopt_topology`: makes it take a topology re-derived elsewhere as its own masks.
    """

    topology_stage: ClassVar[int] = 0

    def __init__(self, parameters: ParameterFilter = None, strict: bool = True) -> None:
        super().__init__(parameters, strict)
        self._recording = False
        self._recorded: Optional[list[Tensor]] = None

    # ------------------------------------------------------------------ protocol
    def pruning_recipe(self) -> Optional[PruningRecipe]:
        """How this callback prunes its topology; ``None`` when it does not prune (e.g. un-pruning)."""
        return None

    def record_pruned_values(self) -> None:
        """From now on, remember the values of the weights this callback prunes (before zeroing them)."""
        self._recording = True

    def pruned_values(self) -> Optional[list[Tensor]]:
        """The values of the weights pruned while recording, in the order of :meth:`masks` (0
        where nothing was recorded); ``None`` before anything was recorded."""
        return self._recorded

    @torch.no_grad()
    def remember_pruned(self, newly: list[Tensor]) -> None:
        """Records the current values of the ``newly`` pruned entries (when recording); a pruning
        subclass calls it just before zeroing them."""
        if not self._recording:
            return
        if self._recorded is None:
            self._recorded = [torch.zeros_like(p) for p in self._masked.params]
        self._recorded = [torch.where(n, p.detach(), v) for n, p, v in zip(newly, self._masked.params, self._recorded)]

    def adopt_topology(self, masks: Mapping[str, Tensor]) -> None:
        """Takes ``masks`` (kept masks by parameter name) as the masks of the parameters it holds;
        the others keep theirs."""
        self._masked.set_masks([masks.get(n, m) for n, m in zip(self._masked.names, self._masked.masks)])

    def check_setup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._settled = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        settle_topology(trainer, pl_module)

    def settle(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Builds (fresh run) or restores (resumed run) the masks, then changes the topology; once per fit."""
        if getattr(self, "_settled", False):
            return
        self._settled = True
        fresh = self._loaded is None
        self.prepare_topology(trainer, pl_module, fresh)
        MaskedUpdateCallback.on_fit_start(self, trainer, pl_module)
        if fresh:
            self.change_topology(trainer, pl_module)

    def prepare_topology(self, trainer: L.Trainer, pl_module: L.LightningModule, fresh: bool) -> None:
        """Runs before the masks are built or restored (default: nothing)."""

    def change_topology(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The fit-start topology change of a fresh run."""
        raise NotImplementedError


def topology_callbacks(trainer: Optional[L.Trainer]) -> list[TopologyCallback]:
    """Every topology callback on ``trainer`` (pruning, keeping or un-pruning a topology)."""
    return [] if trainer is None else [cb for cb in trainer.callbacks if isinstance(cb, TopologyCallback)]  # type: ignore[attr-defined]


def pruning_recipes(trainer: Optional[L.Trainer]) -> list[PruningRecipe]:
    """The :meth:`TopologyCallback.pruning_recipe` of each of :func:`pruning_callbacks`, in order."""
    return [recipe for cb in pruning_callbacks(trainer) if (recipe := cb.pruning_recipe()) is not None]


def pruning_callbacks(trainer: Optional[L.Trainer]) -> list[TopologyCallback]:
    """The topology callbacks on ``trainer`` that prune (their :meth:`TopologyCallback.pruning_recipe` is set)."""
    if trainer is None:
        return []
    return [cb for cb in trainer.callbacks if isinstance(cb, TopologyCallback) and cb.pruning_recipe() is not None]  # type: ignore[attr-defined]
