"""ClassificationAccuracy / unlearning accuracy: functional core against sklearn, Metric against the functional."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import accuracy_score

from lightning_unlearn.metrics import ClassificationAccuracy, UnlearningAccuracy
from lightning_unlearn.metrics.functional import classification_accuracy as accuracy
from lightning_unlearn.metrics.functional import unlearning_accuracy
from lightning_unlearn.metrics.functional.accuracy import _accuracy_compute, _accuracy_update


def test_accuracy_hand_computed():
    preds = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.0, 0.0, 1.0]])
    target = torch.tensor([0, 2, 0, 0, 1])  # argmax = [0, 2, 1, 0, 2] -> 3 of 5 correct
    correct, total = _accuracy_update(preds, target)
    assert (int(correct), int(total)) == (3, 5)
    assert accuracy(preds, target).item() == pytest.approx(0.6)
    assert unlearning_accuracy(preds, target).item() == pytest.approx(0.4)
    assert accuracy(preds.argmax(1), target).item() == pytest.approx(0.6)


@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_matches_sklearn(num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(257, num_classes, generator=g)
    target = torch.randint(0, num_classes, (257,), generator=g)
    expected = accuracy_score(target.numpy(), logits.argmax(1).numpy())
    assert accuracy(logits, target).item() == pytest.approx(expected, abs=1e-6)
    assert accuracy(logits.softmax(1), target).item() == pytest.approx(expected, abs=1e-6)
    assert unlearning_accuracy(logits, target).item() == pytest.approx(1 - expected, abs=1e-6)


def test_accuracy_half_precision_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g)
    target = torch.randint(0, 5, (64,), generator=g)
    half = logits.to(torch.bfloat16)
    expected = accuracy_score(target.numpy(), half.float().argmax(1).numpy())
    assert accuracy(half, target).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("metric_cls, fn", [(ClassificationAccuracy, accuracy), (UnlearningAccuracy, unlearning_accuracy)])
def test_metric_over_batches_equals_functional_on_concatenation(metric_cls, fn):
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(n, 4, generator=g), torch.randint(0, 4, (n,), generator=g)) for n in (7, 16, 1, 30)]
    metric = metric_cls()
    for preds, target in batches:
        metric.update(preds, target)
    all_preds = torch.cat([p for p, _ in batches])
    all_target = torch.cat([t for _, t in batches])
    assert metric.compute().item() == pytest.approx(fn(all_preds, all_target).item(), abs=1e-7)
    # batch-mean of per-batch accuracies would differ here: the metric must weight by samples
    mean_of_batches = sum(fn(p, t).item() for p, t in batches) / len(batches)
    assert metric.compute().item() != pytest.approx(mean_of_batches, abs=1e-3)
    metric.reset()
    metric.update(*batches[0])
    assert metric.compute().item() == pytest.approx(fn(*batches[0]).item())


def test_unlearning_accuracy_metric_is_one_minus_accuracy_metric():
    g = torch.Generator().manual_seed(4)
    acc, ua = ClassificationAccuracy(), UnlearningAccuracy()
    for _ in range(3):
        preds, target = torch.randn(20, 3, generator=g), torch.randint(0, 3, (20,), generator=g)
        acc.update(preds, target)
        ua.update(preds, target)
    assert ua.compute().item() == pytest.approx(1 - acc.compute().item(), abs=1e-7)
    assert ClassificationAccuracy.higher_is_better is True and ClassificationAccuracy.full_state_update is False


def test_metric_states_are_sum_reduced():
    metric = ClassificationAccuracy()
    assert metric._reductions["correct"].__name__ == metric._reductions["total"].__name__ == "dim_zero_sum"


def test_empty_input_is_nan():
    assert math.isnan(_accuracy_compute(*_accuracy_update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))).item())


@pytest.mark.parametrize(
    "preds, target, name",
    [
        (torch.randn(4, 3, 2), torch.zeros(4, dtype=torch.long), "preds"),
        (torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long), "target"),
        (torch.randn(4, 3), torch.zeros(4), "target"),
        (torch.rand(4), torch.zeros(4, dtype=torch.long), "preds"),
        (torch.randn(5, 3), torch.zeros(4, dtype=torch.long), "same number of samples"),
    ],
)
def test_invalid_inputs_raise_value_error_naming_the_argument(preds, target, name):
    with pytest.raises(ValueError, match=name):
        accuracy(preds, target)
    with pytest.raises(ValueError, match=name):
        ClassificationAccuracy().update(preds, target)


def test_no_name_shadows_torchmetrics() -> None:
    import torchmetrics
    import torchmetrics.functional

    import lightning_unlearn.metrics as ours
    import lightning_unlearn.metrics.functional as ours_functional

    assert not set(ours.__all__) - {"functional"} & set(torchmetrics.__all__)
    assert not set(ours_functional.__all__) & set(torchmetrics.functional.__all__)
