"""Shared pieces of the benchmark scripts: timing, data, JSON/markdown output."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def hardware() -> str:
    """One line naming the device the numbers were taken on."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads), torch {torch.__version__}"


def accelerator() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(Callback):
    """Wall time of the optimizer steps after `skip` warm-up steps (steady state only)."""

    def __init__(self, skip: int = 3) -> None:
        self.skip, self.times, self._t = skip, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync()
        if trainer.global_step > self.skip:
            self.times.append(time.perf_counter() - self._t)

    @property
    def per_step(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


class EpochTimer(Callback):
    """Wall time of the (last) training epoch, from epoch start to epoch end: trainer setup,
    fit-start hooks and the loaders' first batch fetch are outside it."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sync()
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sync()
        self.elapsed = time.perf_counter() - self._t


def epoch_time(module: L.LightningModule, dm) -> float:
    """Seconds of one training epoch of `module` on `dm` through a quiet Lightning trainer."""
    timer = EpochTimer()
    trainer = L.Trainer(**QUIET, max_epochs=1, accelerator=accelerator(), devices=1, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.elapsed


def fashion_mnist(forget: Any, train_size: Optional[int] = None, test_size: Optional[int] = None, **kw: Any):
    """FashionMNISTDataModule from Debian's package (or $FASHION_MNIST_ROOT / .data/fashion-mnist)."""
    from lightning_unlearn.data import FashionMNISTDataModule

    root = os.environ.get("FASHION_MNIST_ROOT") or (".data/fashion-mnist" if Path(".data/fashion-mnist").is_dir() else None)
    return FashionMNISTDataModule(forget=forget, root=root, train_size=train_size, test_size=test_size, **kw)


def datamodule(data: str, forget: Any, train_size: Optional[int] = None, test_size: Optional[int] = None, **kw: Any):
    """Fashion-MNIST (benchmarks) or digits (the smoke runs in the test suite)."""
    if data == "digits":
        from lightning_unlearn.data import DigitsDataModule

        return DigitsDataModule(forget=forget, **kw)
    return fashion_mnist(forget, train_size=train_size, test_size=test_size, **kw)


def mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def emit(name: str, result: dict, table: str, out: Optional[str]) -> None:
    """Prints the markdown table and the JSON; writes the JSON to `out` when given."""
    print(table)
    payload = json.dumps({"benchmark": name, "hardware": hardware(), **result}, indent=2)
    print(payload)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(payload + "\n")


def seed(value: int) -> None:
    L.seed_everything(value, verbose=False)
