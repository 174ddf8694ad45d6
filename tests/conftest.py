"""Shared fixtures: digits, a trained original model, small synthetic data."""

from __future__ import annotations

import copy
import os

import lightning as L
import pytest
import torch
from torch.utils.data import TensorDataset

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to oversubscription

from lightning_unlearn.data import DigitsDataModule, ForgetSpec  # noqa: E402
from lightning_unlearn.models import ImageClassifier, SmallCNN  # noqa: E402

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU Trainer without logging, checkpoints or progress bars (overridable)."""
    return L.Trainer(**{**QUIET, "accelerator": "cpu", "devices": 1, **kwargs})


@pytest.fixture(scope="session")
def original_digits_model() -> torch.nn.Module:
    """A SmallCNN trained on the digits training set (all classes, 15 epochs): ~98 % test accuracy."""
    L.seed_everything(0)
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]))
    net = SmallCNN(in_channels=1, num_classes=10)
    quiet_trainer(max_epochs=15).fit(ImageClassifier(net, lr=0.05), datamodule=dm)
    return net.eval()


@pytest.fixture()
def original(original_digits_model) -> torch.nn.Module:
    """A private copy of the trained original for one test."""
    return copy.deepcopy(original_digits_model)


@pytest.fixture()
def digits_classwise() -> DigitsDataModule:
    return DigitsDataModule(forget=ForgetSpec(classes=[3]))


@pytest.fixture()
def digits_random() -> DigitsDataModule:
    return DigitsDataModule(forget=ForgetSpec(ratio=0.1, seed=0))


def synthetic_dataset(n: int = 100, classes: int = 4, features: int = 6, seed: int = 0) -> TensorDataset:
    """Gaussian blobs, one per class, labels cycling 0..classes-1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, features, generator=g) + 3.0 * torch.nn.functional.one_hot(y, features).float()
    return TensorDataset(x, y)


def run_and_resume(make_method, datamodule, tmp_path, limit_train_batches: int = 2):
    """Trains ``make_method()`` for 2 epochs straight, and for 1 epoch + a checkpoint + a resume to 2.
    Returns ``(straight, resumed, checkpoint_path)``: the two methods should hold identical state."""

    def run(epochs, ckpt=None, save=None):
        L.seed_everything(0)
        method = make_method()
        trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=limit_train_batches)
        trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return method

    path = tmp_path / "mid.ckpt"
    straight = run(2)
    run(1, save=path)
    return straight, run(2, ckpt=path), path


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-identical state dicts."""
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0, equal_nan=True, msg=key)


def required_args(name: str) -> dict:
    """Arguments a registered method cannot run without (everything else has a default)."""
    from lightning_unlearn.models import SmallCNN

    return {"oracle": SmallCNN(in_channels=1, num_classes=10)} if name == "oracle_matching" else {}
