"""`OneShotEdit`: the Lightning machinery of the retrain-free methods (SSD, LFSSD, Fisher forgetting,
influence unlearning): one pass over the data accumulates statistics, then one weight edit, no
optimiser step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor, nn

from lightning_unlearn.data.access import unlearning_data
from lightning_unlearn.data.datamodule import LONGEST
from lightning_unlearn.methods.base import UnlearningMethod

Statistics = dict[str, Any]


@dataclass(frozen=True)
class PassCounts:
    """How much of each split the pass covered, summed over ranks.

    Attributes:
        samples: samples accumulated per split.
        batches: batches accumulated per split.
        pass_batches: batches one full pass over each split has (the reference's batch count);
            equal to ``batches`` when the split size is unknown (a plain datamodule).
    """

    samples: dict[str, int]
    batches: dict[str, int]
    pass_batches: dict[str, int]


class OneShotEdit(UnlearningMethod):
    """Base of the retrain-free methods: a ``trainer.fit`` that never steps an optimiser.

    One epoch streams the method's splits through the ordinary Lightning loop (progress bars,
    loggers, callbacks, DDP and checkpoints work as for any fit): :meth:`accumulate` adds each
    batch to running statistics held on the parameters' device, and at the end of that epoch
    :meth:`apply_edit` changes the weights once, from the statistics summed over all ranks.
    The fit then stops (later epochs, e.g. after a resume, skip their batches).

    Data flow: the UnlearningDataModule pairs a batch of each split per step; the split with more
    batches defines the epoch and the other is cycled. Only one pass over each split is used: a
    split's batches count until it has contributed ``ceil(|split| / world_size)`` samples on
    this rank (the last one truncated), so each split is seen exactly once, as in the reference
    implementations, whatever the ratio of their sizes. With a plain datamodule (methods that
    need only ``retain``), every batch of the epoch counts.

    DDP: statistics are summed (or gathered) over ranks before the edit, and every rank applies
    the same edit (seeded noise included). The split that defines the epoch is covered exactly
    once (up to the sampler's padding to equal shards); the cycled split is covered
    approximately, because Lightning's distributed sampler wrapper reshuffles its stream, so the
    ``ceil(|split| / world_size)`` samples each rank takes are a random draw of the right size
    that may repeat or miss a few examples. On one device both splits are exact.

    Resume: the edit and ``edited`` are saved in every checkpoint, so a run resumed from any
    checkpoint taken after the edit (all end-of-epoch checkpoints) gives bit-identical weights and
    does not edit again. A mid-pass checkpoint also holds the partial statistics and counters
    (key ``"one_shot_edit"``), but Lightning restores the data position only for stateful loaders:
    such a resume is not exact.

    Manual optimisation with no optimiser: trainer-level ``accumulate_grad_batches`` and gradient
    clipping are rejected by Lightning; ``max_steps`` does not apply (no optimiser steps: bound the
    pass with ``limit_train_batches``). Subclasses implement :meth:`init_statistics`,
    :meth:`accumulate` and :meth:`apply_edit` (and :meth:`reduce_statistics` when a statistic is
    not a sum).

    Args:
        model: the trained classifier to unlearn.
        weights: optional path of weights to load into ``model`` first.
        inplace: edit the given model object itself instead of a copy.
    """

    automatic_optimization = False
    unlearning_inputs: ClassVar[tuple[str, ...]] = ("forget", "retain")
    default_epoch_split: ClassVar[str] = LONGEST  # the other split is then fully covered
    state_key: ClassVar[str] = "one_shot_edit"

    def __init__(self, model: nn.Module, weights: Optional[str] = None, inplace: bool = False) -> None:
        super().__init__(model, weights=weights, inplace=inplace)
        self.edited = False
        self.statistics: Optional[Statistics] = None
        self._seen = dict.fromkeys(self.unlearning_inputs, 0)  # samples accumulated on this rank
        self._batches = dict.fromkeys(self.unlearning_inputs, 0)  # batches accumulated on this rank
        self._budget: dict[str, Optional[int]] = dict.fromkeys(self.unlearning_inputs, None)
        self._pass_batches: dict[str, Optional[int]] = dict.fromkeys(self.unlearning_inputs, None)

    # ------------------------------------------------------------------ what subclasses write
    def init_statistics(self) -> Statistics:
        """The zeroed statistics (tensors on the parameters' device)."""
        raise NotImplementedError

    def accumulate(self, split: str, x: Tensor, y: Tensor) -> Tensor:
        """Adds one batch of ``split`` to ``self.statistics``; returns a loss to log."""
        raise NotImplementedError

    def apply_edit(self, statistics: Statistics, counts: PassCounts) -> dict[str, float]:
        """Edits ``self.model``'s weights (under ``no_grad``) from the statistics summed over ranks.

        Args:
            statistics: the reduced statistics.
            counts: how much of each split the pass covered.

        Returns:
            Numbers to log under ``edit/``.
        """
        raise NotImplementedError

    @property
    def _stats(self) -> Statistics:
        """:attr:`statistics` during the pass (built at train start, dropped once the edit is made)."""
        if self.statistics is None:
            raise RuntimeError(f"{type(self).__name__}: no statistics outside the importance pass.")
        return self.statistics

    def reduce_statistics(self, statistics: Statistics) -> Statistics:
        """Sums every tensor of the statistics over ranks (override for non-sum statistics)."""
        return {key: self._reduce(value) for key, value in statistics.items()}

    # ------------------------------------------------------------------ Lightning hooks
    def configure_optimizers(self) -> None:
        return None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = unlearning_data(self._trainer) if stage == "fit" else None
        if datamodule is None:
            return
        for name in self.unlearning_inputs:
            self._budget[name] = math.ceil(len(datamodule.split(name)) / self.trainer.world_size)  # type: ignore[arg-type]
            self._pass_batches[name] = datamodule.pass_batches(name)

    def on_train_start(self) -> None:
        if self.edited:
            return
        if self.statistics is None:
            self.statistics = self.init_statistics()
        else:  # restored from a mid-pass checkpoint
            self.statistics = move_data_to_device(self.statistics, self.device)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]:
        if self.edited:
            return -1  # the edit is done: skip the rest of the epoch
        self.model.eval()  # importance passes use inference-mode BatchNorm/dropout, as the references do
        return None

    def training_step(self, batch: Any, batch_idx: int) -> None:
        splits = self._as_splits(batch)
        for name in self.unlearning_inputs:
            x, y = splits[name]
            budget = self._budget[name]
            take = len(x) if budget is None else min(len(x), budget - self._seen[name])
            if take <= 0:
                continue
            loss = self.accumulate(name, x[:take], y[:take])
            self._seen[name] += take
            self._batches[name] += 1
            self.log(f"train/{name}_loss", loss, batch_size=take)

    def on_train_epoch_end(self) -> None:
        if self.edited:
            return
        counts = self._reduce(
            torch.tensor(
                [[self._seen[name], self._batches[name]] for name in self.unlearning_inputs],
                dtype=torch.long,
                device=self.device,
            )
        ).tolist()
        names = self.unlearning_inputs
        batches = {name: counts[i][1] for i, name in enumerate(names)}
        pass_counts = PassCounts(
            samples={name: counts[i][0] for i, name in enumerate(names)},
            batches=batches,
            pass_batches={name: self._pass_batches[name] or batches[name] for name in names},
        )
        statistics = self.reduce_statistics(self._stats)
        if not _all_finite(statistics):  # a NaN/inf loss or gradient in the pass: the edit would write NaN
            self.edited, self.statistics = True, None
            self.divergence_guard.stop(self.trainer, "non-finite statistics (a NaN/inf loss or gradient in the pass)")
            return
        with torch.no_grad():
            logs = self.apply_edit(statistics, pass_counts)
        self.edited, self.statistics = True, None
        if logs:
            self.log_dict({f"edit/{key}": float(value) for key, value in logs.items()})
        self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.state_key] = {
            "edited": self.edited,
            "seen": dict(self._seen),
            "batches": dict(self._batches),
            "statistics": self.statistics,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(self.state_key)
        if state is None:
            return
        self.edited, self.statistics = bool(state["edited"]), state["statistics"]
        self._seen.update(state["seen"])
        self._batches.update(state["batches"])

    # ------------------------------------------------------------------ helpers
    def _reduce(self, value: Any) -> Any:
        """Sum over ranks of a tensor or a list of tensors (identity on one device)."""
        if isinstance(value, Tensor):
            return self.trainer.strategy.reduce(value, reduce_op="sum")
        if isinstance(value, (list, tuple)):
            return [self._reduce(item) for item in value]
        return value

    def batch_gradients(self, loss: Tensor) -> tuple[Tensor, ...]:
        """Gradient of ``loss`` w.r.t. the trainable parameters (zeros for unused ones), without
        touching ``.grad``."""
        return torch.autograd.grad(loss, self.trainable_parameters(), materialize_grads=True)


def _all_finite(value: Any) -> bool:
    """Whether every floating tensor in ``value`` (a tensor or a collection) is finite."""
    if isinstance(value, Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True
