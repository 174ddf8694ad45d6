"""One-pass batch plans: every forget and every retain example exactly once per epoch.

The SalUn reference's random-label epochs (OPTML-Group/Unlearn-Saliency,
``Classification/unlearn/RL.py``) pass each example once:

* ``"sequential"`` (its CIFAR-10 / SVHN path): one shuffled pass of forget-only batches, then one
  shuffled pass of retain-only batches;
* ``"shuffled"`` (its CIFAR-100 / TinyImageNet path): one shuffled pass over the union, in mixed
  batches.

A plan is a :class:`OnePassPlan` sampler whose items are whole batches (tuples of indices into
forget-then-retain), read by :class:`PlannedBatches` into ``{"forget": (x, y), "retain": (x, y)}``
dicts holding only the splits present in the batch. Because the sampler yields batches, a
distributed run splits the plan batch by batch (Lightning wraps the sampler in its
``DistributedSamplerWrapper`` without reshuffling a custom sampler): every rank keeps the plan's
order, forget batches before retain batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler, default_collate

__all__ = ["ONE_PASS_PLANS", "OnePassPlan", "PlannedBatches"]

#: The one-pass plans (see the module docstring).
ONE_PASS_PLANS = ("sequential", "shuffled")
Plan = Literal["sequential", "shuffled"]


class OnePassPlan(Sampler[tuple[int, ...]]):
    """The batches of one epoch, each a tuple of indices into ``forget + retain`` (forget examples
    are ``0 .. forget_size - 1``, retain examples follow).

    ``"sequential"``: a random permutation of the forget set cut into batches of
    ``forget_batch_size``, then one of the retain set cut into batches of ``batch_size`` (the
    last batch of each pass may be smaller, as a DataLoader with ``drop_last=False``).
    ``"shuffled"``: a random permutation of the union cut into batches of ``batch_size``.
    The order depends only on ``(seed, epoch)`` (Lightning calls :meth:`set_epoch`), so a resumed
    run sees the same batches.

    Args:
        forget_size: |D_f|.
        retain_size: |D_r|.
        batch_size: batch size of retain (``"sequential"``) or mixed (``"shuffled"``) batches.
        forget_batch_size: batch size of the forget batches of ``"sequential"``.
        plan: ``"sequential"`` or ``"shuffled"``.
        seed: seed of the order.

    Example::

        >>> plan = OnePassPlan(3, 4, batch_size=2, forget_batch_size=2, plan="sequential")
        >>> [len(batch) for batch in plan]
        [2, 1, 2, 2]
        >>> sorted(i for batch in plan for i in batch)
        [0, 1, 2, 3, 4, 5, 6]
    """

    def __init__(
        self,
        forget_size: int,
        retain_size: int,
        batch_size: int,
        forget_batch_size: int,
        plan: Plan = "sequential",
        seed: int = 0,
    ) -> None:
        if plan not in ONE_PASS_PLANS:
            raise ValueError(f"`plan` must be one of {ONE_PASS_PLANS}, got {plan!r}.")
        if min(batch_size, forget_batch_size) < 1 or min(forget_size, retain_size) < 0:
            raise ValueError("OnePassPlan needs positive batch sizes and non-negative split sizes.")
        self.forget_size, self.retain_size = int(forget_size), int(retain_size)
        self.batch_size, self.forget_batch_size = int(batch_size), int(forget_batch_size)
        self.plan, self.seed, self.epoch = plan, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.plan == "sequential":
            return math.ceil(self.forget_size / self.forget_batch_size) + math.ceil(self.retain_size / self.batch_size)
        return math.ceil((self.forget_size + self.retain_size) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        # A generator: the order is drawn at the first batch, after Lightning's set_epoch (a
        # DataLoader with batch_size=None calls iter() on its sampler when its iterator is made,
        # which a resumed fit does before setting the epoch).
        generator = torch.Generator().manual_seed(self.seed + 7919 * self.epoch)
        if self.plan == "sequential":
            forget = torch.randperm(self.forget_size, generator=generator)
            retain = torch.randperm(self.retain_size, generator=generator) + self.forget_size
            batches = [*forget.split(self.forget_batch_size), *retain.split(self.batch_size)]
        else:
            batches = list(torch.randperm(self.forget_size + self.retain_size, generator=generator).split(self.batch_size))
        for batch in batches:
            if len(batch):
                yield tuple(batch.tolist())


class PlannedBatches(Dataset):
    """Reads the batches of a :class:`OnePassPlan`: item ``(i, j, ...)`` is the collated batch
    ``{"forget": (x, y), "retain": (x, y)}`` of those examples, with only the splits present
    (forget examples first, each split in plan order).

    Args:
        forget: the forget set D_f (training transforms).
        retain: the retain set D_r (training transforms).
        collate: how a list of examples becomes ``(x, y)`` (default: ``default_collate``; a wrapped
            datamodule passes its user's collate, unpacked to ``(x, y)``).
    """

    def __init__(self, forget: Dataset, retain: Dataset, collate: Optional[Callable[[list], Any]] = None) -> None:
        self.forget, self.retain = forget, retain
        self.collate = collate or default_collate
        self.forget_size = len(forget)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.forget_size + len(self.retain)  # type: ignore[arg-type]

    def __getitem__(self, batch: Any) -> dict[str, tuple[Tensor, Tensor]]:
        indices = [int(batch)] if isinstance(batch, int) else [int(i) for i in batch]
        parts = {
            "forget": [self.forget[i] for i in indices if i < self.forget_size],
            "retain": [self.retain[i - self.forget_size] for i in indices if i >= self.forget_size],
        }
        out = {}
        for name, samples in parts.items():
            if samples:
                x, y = self.collate(samples)[:2]
                out[name] = (x, y)
        return out
