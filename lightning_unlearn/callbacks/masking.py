"""The masking core shared by every mask-holding callback (SalUn saliency, dynamic masks, pruning).

Functional pieces usable in any training loop:

* :func:`select_parameters` picks the parameters a callback acts on (regexes over names);
* :func:`topk_mask` turns per-parameter scores into boolean masks (global or per-tensor top-k);
* :class:`MaskedParameters` holds the masks next to their parameters and enforces them:
  gradient masking (``torch._foreach_mul_``) and the *strict freeze* that puts frozen entries
  back to their anchor after the optimiser step and clears their optimiser state, so neither
  weight decay nor momentum can move a frozen weight;
* :func:`pack_mask` / :func:`unpack_mask` store masks as 1 bit per entry.

:class:`MaskedUpdateCallback` is the Lightning adapter that every mask callback subclasses: it
masks gradients in ``on_before_optimizer_step``, restores frozen entries after each optimiser
step, and saves/restores masks and anchors in checkpoints. Subclasses only decide how the masks
are built (:meth:`MaskedUpdateCallback.build_masks`) and, optionally, how they evolve.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, ClassVar, Literal, Optional, Sequence, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn import Parameter
from torch.optim import Optimizer

from lightning_unlearn.models.network import network_of

Scope = Literal["global", "layer"]
SCOPES = ("global", "layer")
ParameterFilter = Union[str, list[str], None]


# ---------------------------------------------------------------------------------- validation
def check_fraction(value: float, name: str) -> float:
    """Returns ``value`` as a float in (0, 1]; raises a ValueError naming argument ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"`{name}` must be a fraction in (0, 1], got {value!r}.")
    return float(value)


def check_scope(scope: str, name: str = "scope") -> str:
    """Returns ``scope`` if it is ``"global"`` or ``"layer"``; raises a ValueError otherwise."""
    if scope not in SCOPES:
        raise ValueError(f"`{name}` must be 'global' (rank all parameters together) or 'layer' (rank within each tensor), got {scope!r}.")
    return scope


# ---------------------------------------------------------------------------------- selection
def select_parameters(
    module: nn.Module,
    parameters: ParameterFilter,
    default: Optional[Callable[[str, Parameter], bool]] = None,
) -> list[tuple[str, Parameter]]:
    """The trainable parameters of ``module`` a callback acts on, as ``(name, parameter)`` pairs.

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


# ---------------------------------------------------------------------------------- masks
def topk_mask(scores: Sequence[Tensor], fraction: float, scope: Scope) -> list[Tensor]:
    """Boolean masks keeping the top ``fraction`` of entries by score.

    ``scope="global"`` ranks all entries of all tensors together and keeps exactly
    ``round(fraction * n)`` of them; ``scope="layer"`` ranks within each tensor and keeps
    ``max(1, round(fraction * n_tensor))`` per tensor. Ties are broken by position (stable sort:
    the lower flat index, in the order of ``scores``, is kept first), so masks are deterministic.

    Args:
        scores: one score tensor per parameter (any shape; masks get the same shapes and devices).
        fraction: fraction of entries kept, in (0, 1].
        scope: ``"global"`` or ``"layer"``.

    Raises:
        ValueError: ``fraction`` outside (0, 1] or unknown ``scope``.
    """
    fraction = check_fraction(fraction, "fraction")
    check_scope(scope)
    scores = [s.detach() for s in scores]
    if scope == "layer":
        return [_keep_top(s.flatten(), max(1, round(fraction * s.numel()))).view_as(s) for s in scores]
    device = scores[0].device
    flat = torch.cat([s.flatten().to(device) for s in scores])
    keep = _keep_top(flat, round(fraction * flat.numel()))
    return [m.view_as(s).to(s.device) for m, s in zip(keep.split([s.numel() for s in scores]), scores)]


def _keep_top(flat: Tensor, k: int) -> Tensor:
    """Bool vector marking the ``k`` largest entries of ``flat`` (ties: lower index first)."""
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[order[:k]] = True
    return keep


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
    return bool(torch.stack([n.float().to(grads[0].device) for n in torch._foreach_norm(list(grads), ord=math.inf)]).isfinite().all())


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
    """

    def __init__(self, names: Sequence[str], params: Sequence[Parameter], masks: Sequence[Tensor]) -> None:
        if not (len(names) == len(params) == len(masks)):
            raise ValueError(f"Got {len(names)} names, {len(params)} parameters and {len(masks)} masks: they must match.")
        self.names, self.params = list(names), list(params)
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
        self.anchor = torch._foreach_mul([p.detach() for p in self.params], self._frozen())

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


# ---------------------------------------------------------------------------------- the adapter
def settle_topology(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Runs the fit-start topology changes of every callback on the trainer, pruning before
    un-pruning, whatever the order of the callbacks (each runs once per fit).

    A callback takes part with ``topology_stage`` (an int: lower runs first) and ``settle(trainer,
    pl_module)``. Mask callbacks that read the weights at fit start (e.g. a saliency computed on
    the pruned model) call this first.
    """
    stages = [cb for cb in trainer.callbacks if isinstance(getattr(cb, "topology_stage", None), int) and hasattr(cb, "settle")]
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
        parameters: regex(es) selecting the parameters by name (see :func:`select_parameters`);
            ``None``: the subclass's default selection (:meth:`default_parameters`).
        strict: restore frozen entries and clear their optimiser state after every step.
    """

    anchor: ClassVar[Literal["values", "zero"]] = "values"
    checkpoint_key: ClassVar[str] = "lightning_unlearn_masks"

    def __init__(self, parameters: ParameterFilter = None, strict: bool = True) -> None:
        if parameters is not None and not isinstance(parameters, (str, list, tuple)):
            raise ValueError(f"`parameters` must be a regex, a list of regexes or None, got {type(parameters).__name__}.")
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

    def build_masks(
        self, trainer: L.Trainer, pl_module: L.LightningModule, named: list[tuple[str, Parameter]]
    ) -> list[Tensor]:
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
            self.selected(pl_module)  # fail early on a filter matching nothing
            self.check_setup(trainer, pl_module)

    def selected(self, pl_module: L.LightningModule) -> list[tuple[str, Parameter]]:
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
        named = self.selected(pl_module)
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

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
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

    def masks(self) -> dict[str, Tensor]:
        """The current masks by parameter name (``True`` = may change)."""
        return {} if self.masked is None else dict(zip(self.masked.names, self.masked.masks))


class TopologyCallback(MaskedUpdateCallback):
    """Base of the mask callbacks that change the network's topology at fit start (pruning,
    un-pruning). They run in ``topology_stage`` order (lower first) whatever their order on the
    trainer, once per fit (:func:`settle_topology`), before any other mask callback builds its
    masks. Subclasses implement :meth:`change_topology` (fresh runs only; a resumed run restores
    the checkpointed masks instead) and, when needed, :meth:`prepare_topology`.
    """

    topology_stage: ClassVar[int] = 0

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
