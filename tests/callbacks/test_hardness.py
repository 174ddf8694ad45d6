"""UnlearningHardness: measured before any step, logged, and written to the unlearning report."""

import copy
import json

import pytest
import torch

from lightning_unlearn.callbacks import UnlearningEvaluation, UnlearningHardness
from lightning_unlearn.functional.hardness import request_hardness
from lightning_unlearn.methods import GradientAscent
from tests.conftest import quiet_trainer


def test_hardness_is_measured_before_unlearning_and_reported(original, digits_classwise, tmp_path):
    hardness = UnlearningHardness(retain_batches=2)
    evaluation = UnlearningEvaluation(report_path=str(tmp_path / "report.json"))
    method = GradientAscent(copy.deepcopy(original), lr=0.01)
    quiet_trainer(max_epochs=1, callbacks=[hardness, evaluation]).fit(method, datamodule=digits_classwise)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["metrics"]["hardness"] == hardness.results
    assert -1 <= hardness.results["kappa"] <= 1 and hardness.results["forget_examples"] == len(digits_classwise.forget_indices)
    assert hardness.per_example.shape == (len(digits_classwise.forget_indices),)
    # the core on the untouched original (another retain sample): the same per-example hardness ranking
    summary, per_example = request_hardness(
        original, digits_classwise.forget_dataloader(), [next(iter(digits_classwise.retain_dataloader()))]
    )
    assert summary.forget_examples == hardness.results["forget_examples"]
    assert torch.corrcoef(torch.stack([per_example, hardness.per_example]))[0, 1] > 0.9


def test_bad_arguments():
    with pytest.raises(ValueError, match="`retain_batches` must be an integer >= 1"):
        UnlearningHardness(retain_batches=0)
