"""Samplers whose order depends only on seeds and counters, so resumed runs are exact."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sized
from typing import Any, Optional

import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler", "SeededBatchSampler", "cycle"]


class EpochShuffleSampler(Sampler[int]):
    """Random order without replacement that depends only on ``(seed, epoch)``.

    Yields ``num_samples`` indices (default: the dataset size) as consecutive random
    permutations, so a split shorter than ``num_samples`` is cycled with a fresh order each pass.
    Lightning calls :meth:`set_epoch` at every epoch start, which makes resumed runs exact.
    """

    def __init__(self, size: int, num_samples: Optional[int] = None, seed: int = 0) -> None:
        self.size, self.num_samples, self.seed, self.epoch = size, num_samples or size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + 7919 * self.epoch)
        passes = math.ceil(self.num_samples / self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(passes)])
        return iter(order[: self.num_samples].tolist())


class SeededBatchSampler(Sampler[list[int]]):
    """Endless batches over ``size`` examples, resumable at any batch, shardable across ranks.

    Pass ``p`` is a permutation drawn from a generator seeded by ``(seed, p)`` and cut into
    ``max(1, size // batch_size)`` batches (a remainder is left out, so BatchNorm never sees a
    tiny batch). The sampler yields batch numbers ``offset + stride * k`` for ``k = start,
    start + 1, ...``: with ``stride = world_size`` and ``offset = rank`` the ranks draw disjoint
    batches of one shared stream. Batch ``k`` depends only on ``(seed, k)``, so a run resumed
    after ``k`` draws continues exactly where an uninterrupted run would.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, start: int = 0, stride: int = 1, offset: int = 0) -> None:
        if size <= 0 or batch_size <= 0:
            raise ValueError(f"Need a non-empty dataset and a positive batch size, got size={size}, batch_size={batch_size}.")
        self.size, self.batch_size, self.seed = size, min(batch_size, size), seed
        self.start, self.stride, self.offset = start, stride, offset

    def __iter__(self) -> Iterator[list[int]]:
        per_pass = max(1, self.size // self.batch_size)
        order, order_pass = torch.empty(0, dtype=torch.long), -1  # drawn for pass 0 on the first step
        for k in itertools.count(self.start):
            p, i = divmod(self.offset + self.stride * k, per_pass)
            if p != order_pass:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
                order, order_pass = torch.randperm(self.size, generator=generator), p
            yield order[i * self.batch_size : (i + 1) * self.batch_size].tolist()


def cycle(loader: Iterable, skip: int = 0) -> Iterator[Any]:
    """Endless batches of ``loader`` (re-iterated when exhausted), after skipping ``skip`` batches
    (modulo the loader's length when it has one)."""
    if skip and isinstance(loader, Sized) and len(loader) > 0:
        skip %= len(loader)
    while True:
        empty = True
        for batch in loader:
            empty = False
            if skip:
                skip -= 1
                continue
            yield batch
        if empty:
            raise ValueError("The `dataloader` yields no batch: give it data.")
