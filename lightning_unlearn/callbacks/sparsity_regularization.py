"""`SparsityRegularization`: a scheduled l1 subgradient added to the update (l1-sparse unlearning).

A thin Lightning adapter over :func:`lightning_unlearn.functional.l1_strength` and
:func:`~lightning_unlearn.functional.add_l1_subgradient`.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.optim import Optimizer

from lightning_unlearn.functional.masks import ParameterFilter, select_parameters
from lightning_unlearn.functional.pruning import L1_SCHEDULES, L1Schedule, add_l1_subgradient, l1_strength
from lightning_unlearn.models.network import network_of
from lightning_unlearn.registry import register
from lightning_unlearn.validation import check_choice, check_float, check_int

Interval = Literal["epoch", "step"]
INTERVALS = ("epoch", "step")


@register(
    "sparsity_regularization",
    kind="callback",
    cost="per step: one foreach sign + add over the selected parameters (O(#params))",
    paper="Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023 (l1-sparse)",
)
class SparsityRegularization(Callback):
    """Scheduled l1 regularisation as a subgradient: the l1-sparse unlearning of Jia et al.
    (NeurIPS 2023), "sparsity-aware unlearning".

    Rule (OPTML-Group/Unlearn-Sparse ``unlearn/FT.py``, ``FT_iter`` with l1): minimising
    ``CE + gamma_t * ||theta||_1`` over all parameters is the same update as adding
    ``gamma_t * sign(theta)`` to every gradient, done here in ``on_before_optimizer_step`` (after
    AMP unscaling and DDP all-reduce, before clipping) with foreach ops, so it works with any
    method or LightningModule, in unlearning or in ordinary (sparsity-aware) training.
    Schedule, with ``e`` the epoch of ``E = trainer.max_epochs`` and ``E0 = no_l1_epochs`` final
    epochs without l1: ``linear_decay``: ``alpha * (1 - e / (E - E0))`` (the paper's best);
    ``linear_growth``: ``alpha * e / (E - E0)``; ``constant``: ``alpha``; ``0`` for
    ``e >= E - E0``. ``interval="step"`` uses the optimiser step of
    ``trainer.estimated_stepping_batches`` instead (``E0`` converted to steps). The current
    gamma is logged as ``l1/gamma``.

    l1-sparse = :class:`~lightning_unlearn.methods.FineTune` +
    ``SparsityRegularization(schedule="linear_decay")`` (``configs/digits/l1_sparse.yaml``).
    Defaults: ``alpha = 1e-4`` (the value downstream reproductions use for ResNet-18/CIFAR-10;
    the paper's exact value could not be verified), linear decay, every trainable parameter
    (the reference's l1 norm covers all of them). Parameters without a gradient in a step are
    left alone. Cost per step: one ``sign`` and one ``add`` per selected parameter.
    Needs no data of its own. The rule is :func:`~lightning_unlearn.functional.l1_strength` and
    :func:`~lightning_unlearn.functional.add_l1_subgradient` (usable without a trainer).

    Args:
        alpha: l1 strength (>= 0).
        schedule: ``"constant"``, ``"linear_decay"`` or ``"linear_growth"``.
        interval: ``"epoch"`` (the reference) or ``"step"``.
        no_l1_epochs: number of final epochs trained without l1.
        parameters: regex(es) selecting parameters by name (default: all trainable ones).

    Raises:
        ValueError: negative ``alpha``/``no_l1_epochs``, unknown ``schedule``/``interval``; at
            setup, a ``parameters`` filter matching nothing, or a training whose length the
            schedule cannot know (no ``max_epochs``), or ``no_l1_epochs >= max_epochs``.
    """

    def __init__(
        self,
        alpha: float = 1e-4,
        schedule: L1Schedule = "linear_decay",
        interval: Interval = "epoch",
        no_l1_epochs: int = 0,
        parameters: ParameterFilter = None,
    ) -> None:
        self.alpha = check_float(alpha, "alpha", minimum=0.0, hint="the l1 strength (0 turns the penalty off).")
        self.schedule = check_choice(schedule, "schedule", L1_SCHEDULES)
        self.interval = check_choice(interval, "interval", INTERVALS, hint="'epoch' (the reference) or 'step'.")
        self.no_l1_epochs = check_int(
            no_l1_epochs, "no_l1_epochs", minimum=0, hint="the number of final epochs trained without l1."
        )
        self.parameters = parameters
        self.params: list[Tensor] = []
        self.gamma: Optional[float] = None
        self._length, self._off = 0, 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(alpha=self.alpha, schedule=self.schedule, parameters=self.parameters)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        select_parameters(network_of(pl_module), self.parameters)
        epochs = trainer.max_epochs
        known_epochs = epochs is not None and epochs > 0
        if (self.interval == "epoch" or self.no_l1_epochs) and not known_epochs:
            raise ValueError(
                "SparsityRegularization schedules over epochs: set `max_epochs` on the Trainer"
                " (or use interval='step' with no_l1_epochs=0)."
            )
        if epochs is not None and epochs > 0 and self.no_l1_epochs >= epochs:
            raise ValueError(f"`no_l1_epochs` ({self.no_l1_epochs}) must be smaller than max_epochs ({epochs}).")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.params = [p for _, p in select_parameters(network_of(pl_module), self.parameters)]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.interval == "epoch":
            self._length, self._off = _max_epochs(trainer), self.no_l1_epochs
            return
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "SparsityRegularization(interval='step') needs a training of known length (max_steps or max_epochs)."
            )
        self._length = int(total)
        self._off = round(self.no_l1_epochs * total / _max_epochs(trainer)) if self.no_l1_epochs else 0

    def current_gamma(self, trainer: L.Trainer) -> float:
        """The l1 weight of the step about to be taken."""
        index = trainer.current_epoch if self.interval == "epoch" else trainer.global_step
        return l1_strength(self.alpha, self.schedule, index, self._length, self._off)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        self.gamma = self.current_gamma(trainer)
        add_l1_subgradient(self.params, self.gamma)
        pl_module.log("l1/gamma", self.gamma)


def _max_epochs(trainer: L.Trainer) -> int:
    """``trainer.max_epochs``, checked in ``setup`` to be set when the schedule counts epochs."""
    if trainer.max_epochs is None:
        raise ValueError("SparsityRegularization schedules over epochs: set `max_epochs` on the Trainer.")
    return trainer.max_epochs
