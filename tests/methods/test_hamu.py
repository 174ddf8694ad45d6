"""HAMU-Q on digits: forgets a class, keeps retained accuracy, logs its branches."""

import copy

import lightning as L
import pytest

from lightning_unlearn.methods import HAMU
from lightning_unlearn.metrics import evaluate
from tests.conftest import quiet_trainer


def test_hamu_forgets_a_digits_class_and_keeps_retain(original, digits_classwise):
    L.seed_everything(0)
    method = HAMU(copy.deepcopy(original), lr=0.05, constraint_ratio=1.0, radius=0.03)
    trainer = quiet_trainer(max_epochs=5)
    trainer.fit(method, datamodule=digits_classwise)
    metrics = evaluate(method.model, digits_classwise)
    assert metrics["forget_acc"] < 0.1 and metrics["retain_acc"] > 0.97, metrics
    logged = trainer.callback_metrics
    assert {"train/kappa", "train/direct", "train/rectified", "train/collateral"} <= set(logged)


def test_hamu_takes_no_momentum_or_weight_decay(original):
    with pytest.raises(ValueError, match="drop `momentum`"):
        HAMU(copy.deepcopy(original), momentum=0.9)
    with pytest.raises(ValueError, match="`scope` must be one of"):
        HAMU(copy.deepcopy(original), scope="neuron")
