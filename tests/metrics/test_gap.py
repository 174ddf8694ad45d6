"""Avg. Gap and signed metric gaps against hand computations."""

from __future__ import annotations

import pytest
import torch

from lightning_unlearn.metrics.functional import avg_gap, metric_gaps

OURS = {"unlearning_accuracy": 0.10, "retain_acc": 0.95, "test_acc": 0.90, "mia_efficacy": 0.30, "extra": 1.0}
RETRAIN = {"unlearning_accuracy": 0.08, "retain_acc": 1.00, "test_acc": 0.94, "mia_efficacy": 0.20}


def test_avg_gap_hand_computed():
    # |0.10-0.08| + |0.95-1.00| + |0.90-0.94| + |0.30-0.20| = 0.02 + 0.05 + 0.04 + 0.10 = 0.21
    assert avg_gap(OURS, RETRAIN) == pytest.approx(0.21 / 4)
    assert avg_gap(RETRAIN, OURS) == pytest.approx(0.21 / 4)
    assert avg_gap(OURS, OURS) == 0.0


def test_metric_gaps_are_signed_and_ordered():
    gaps = metric_gaps(OURS, RETRAIN)
    assert list(gaps) == ["unlearning_accuracy", "retain_acc", "test_acc", "mia_efficacy"]
    assert gaps["unlearning_accuracy"] == pytest.approx(0.02)
    assert gaps["retain_acc"] == pytest.approx(-0.05)
    assert gaps["test_acc"] == pytest.approx(-0.04)
    assert gaps["mia_efficacy"] == pytest.approx(0.10)


def test_custom_keys_and_tensor_values():
    ours = {"a": torch.tensor(0.5), "b": 2}
    ref = {"a": 0.25, "b": torch.tensor(3.0)}
    assert avg_gap(ours, ref, keys=("a", "b")) == pytest.approx((0.25 + 1.0) / 2)
    assert metric_gaps(ours, ref, keys=["b"]) == {"b": pytest.approx(-1.0)}


def test_missing_key_raises_key_error_naming_it():
    with pytest.raises(KeyError, match=r"mia_efficacy.*reference"):
        avg_gap(OURS, {k: v for k, v in RETRAIN.items() if k != "mia_efficacy"})
    with pytest.raises(KeyError, match=r"extra.*reference"):
        metric_gaps(OURS, RETRAIN, keys=("extra",))
    with pytest.raises(KeyError, match=r"test_acc.*metrics"):
        avg_gap({"unlearning_accuracy": 0.1, "retain_acc": 0.9}, RETRAIN)


@pytest.mark.parametrize("keys", [(), "test_acc"])
def test_bad_keys_raise_value_error(keys):
    with pytest.raises(ValueError, match="keys"):
        avg_gap(OURS, RETRAIN, keys=keys)
