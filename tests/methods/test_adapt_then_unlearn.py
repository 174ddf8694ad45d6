"""Adapt-then-Unlearn on digits: the parameters move away from the adapted model, the class is
forgotten and retained accuracy is kept; resumes exactly."""

import copy

import lightning as L
import pytest
import torch

from lightning_unlearn.functional import squared_distance
from lightning_unlearn.methods import AdaptThenUnlearn, FineTune
from lightning_unlearn.metrics import evaluate
from tests.conftest import quiet_trainer


def distance(a, b):
    return float(squared_distance(list(a.parameters()), list(b.parameters())))


@pytest.fixture(scope="module")
def plain(original_digits_model):
    """FineTune with stage 2's recipe and no repulsion."""
    from lightning_unlearn.data import DigitsDataModule, ForgetSpec

    L.seed_everything(0)
    method = FineTune(copy.deepcopy(original_digits_model), lr=0.05)
    quiet_trainer(max_epochs=3).fit(method, datamodule=DigitsDataModule(forget=ForgetSpec(classes=[3])))
    return method


@pytest.mark.parametrize("form, weight", [("exponential_l2", 1.0), ("inverse_l2", 1.0), ("negative_l2", 0.02)])
def test_repulsion_moves_away_from_the_adapted_model_and_keeps_retain(original, digits_classwise, plain, form, weight):
    L.seed_everything(0)
    method = AdaptThenUnlearn(copy.deepcopy(original), form=form, weight=weight, lr=0.05, adapt_lr=0.05)
    quiet_trainer(max_epochs=3).fit(method, datamodule=digits_classwise)
    start = distance(original, method.adapted)
    assert start > 0 and method.gamma_used == pytest.approx(1 / start, rel=1e-5)
    assert distance(method.model, method.adapted) > 2 * distance(plain.model, method.adapted)
    metrics = evaluate(method.model, digits_classwise)
    assert metrics["retain_acc"] > 0.97 and metrics["forget_acc"] < evaluate(plain.model, digits_classwise)["forget_acc"]


def test_stage_one_adapts_to_the_forget_set(original, digits_classwise):
    method = AdaptThenUnlearn(copy.deepcopy(original), adapt_lr=0.05)
    quiet_trainer(max_steps=1).fit(method, datamodule=digits_classwise)
    forget_acc = evaluate(method.adapted, digits_classwise)["forget_acc"]
    assert forget_acc == 1.0 and evaluate(method.adapted, digits_classwise)["retain_acc"] < 0.9  # specialised to D_f
    assert all(torch.equal(a, b) for a, b in zip(method._teachers["start"].state_dict().values(), original.state_dict().values()))
