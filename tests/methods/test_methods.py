"""Each base method on digits: it moves the right metric, leaves the user's model alone and
rejects bad input before touching a weight."""

import copy

import pytest
import torch
from torch import nn

from lightning_unlearn.data import DigitsDataModule, ForgetSpec, UnlearningDataModule
from lightning_unlearn.functional.labels import random_labels
from lightning_unlearn.methods import FineTune, GradientAscent, NegGradPlus, RandomLabel, Retrain
from tests.conftest import quiet_trainer


def accuracy(model, loader):
    model.eval()
    with torch.no_grad():
        hits = [(model(x).argmax(-1) == y).float() for x, y in loader]
    return torch.cat(hits).mean().item()


def unlearn(method, dm, epochs):
    quiet_trainer(max_epochs=epochs).fit(method, datamodule=dm)
    return accuracy(method.model, dm.forget_dataloader()), accuracy(method.model, dm.retain_dataloader())


@pytest.mark.parametrize(
    "cls, kwargs, epochs",
    [(GradientAscent, dict(lr=1e-3), 5), (NegGradPlus, dict(lr=0.01), 3), (RandomLabel, dict(lr=0.05), 2)],
)
def test_forgetting_methods_raise_unlearning_accuracy(original, digits_classwise, cls, kwargs, epochs):
    forget_before = accuracy(original, digits_classwise.forget_dataloader())
    assert forget_before > 0.95
    forget_after, retain_after = unlearn(cls(original, **kwargs), digits_classwise, epochs)
    assert 1 - forget_after > (1 - forget_before) + 0.5  # UA up by more than 50 points
    assert retain_after > 0.8  # and the model is still a classifier


def test_finetune_keeps_retain_accuracy(original, digits_random):
    before = accuracy(original, digits_random.retain_dataloader())
    _, retain_after = unlearn(FineTune(original, lr=0.01), digits_random, 2)
    assert retain_after >= before - 0.02


def test_retrain_never_sees_the_forgotten_class(original, digits_classwise):
    method = Retrain(original, lr=0.05)
    initial = copy.deepcopy(method.model.state_dict())
    assert any(not torch.equal(initial[k], v) for k, v in original.state_dict().items())  # re-initialised
    forget_after, retain_after = unlearn(method, digits_classwise, 10)
    assert forget_after < 0.02 and retain_after > 0.9


@pytest.mark.parametrize("cls", [FineTune, GradientAscent, NegGradPlus, RandomLabel, Retrain])
def test_user_model_is_untouched(original, digits_classwise, cls):
    state = copy.deepcopy(original.state_dict())
    method = cls(original)
    quiet_trainer(max_steps=2).fit(method, datamodule=digits_classwise)
    assert method.original_model is original
    assert all(torch.equal(state[k], v) for k, v in original.state_dict().items())
    assert any(not torch.equal(state[k], v) for k, v in method.model.state_dict().items())


def test_inplace_unlearns_the_given_object(original, digits_classwise):
    method = GradientAscent(original, inplace=True)
    assert method.model is original and method.original_model is None


def test_random_labels_are_uniform_over_the_other_classes():
    y = torch.full((20000,), 2)
    draws = random_labels(y, 4, generator=torch.Generator().manual_seed(0))
    assert (draws != 2).all()
    freq = torch.bincount(draws, minlength=4).float() / len(y)
    assert torch.allclose(freq[[0, 1, 3]], torch.full((3,), 1 / 3), atol=0.02)


class NotLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return {"logits": self.lin(x.flatten(1))}


class TooFewClasses(NotLogits):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 5)

    def forward(self, x):
        return self.lin(x.flatten(1))


@pytest.mark.parametrize("model, match", [(NotLogits(), r"\(batch, classes\) logits"), (TooFewClasses(), "5 logits")])
def test_bad_model_output_is_rejected_before_any_step(digits_classwise, model, match):
    state = copy.deepcopy(model.state_dict())
    method = RandomLabel(model, inplace=True)
    with pytest.raises(ValueError, match=match):
        quiet_trainer(max_steps=1).fit(method, datamodule=digits_classwise)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_forget_method_needs_an_unlearning_datamodule(original):
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]))
    loader = dm.retain_dataloader()
    with pytest.raises(ValueError, match="UnlearningDataModule"):
        quiet_trainer(max_steps=1).fit(RandomLabel(original), train_dataloaders=loader)


def test_finetune_runs_on_plain_loaders(original):
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]))
    method = FineTune(original)
    quiet_trainer(max_steps=3).fit(method, train_dataloaders=dm.retain_dataloader())
    assert method.global_step == 3


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda m: NegGradPlus(m, beta=1.5), "beta"),
        (lambda m: RandomLabel(m, alpha=-1), "alpha"),
        (lambda m: RandomLabel(m, epoch_split="test"), "epoch_split"),
        (lambda m: GradientAscent(m, lr=-1), "lr"),
        (lambda m: FineTune("not a model"), "torch.nn.Module"),
        (lambda m: FineTune(m, weights="missing.ckpt"), "does not exist"),
    ],
)
def test_bad_arguments(original, make, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        make(original)


def test_weights_load_from_a_lightning_checkpoint(tmp_path, original):
    from lightning_unlearn.models import ImageClassifier, SmallCNN

    path = tmp_path / "orig.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in original.state_dict().items()}}, path)
    method = FineTune(SmallCNN(1, 10), weights=str(path))
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in method.model.state_dict().items())
    with pytest.raises(ValueError, match="do not fit"):
        FineTune(SmallCNN(1, 10, width=8), weights=str(path))
    assert ImageClassifier.unlearning_inputs == ("train",)


def test_unlearning_datamodule_from_plain_datasets(original, digits_classwise):
    dm = UnlearningDataModule(digits_classwise.train_set, digits_classwise.test_set, forget=ForgetSpec(classes=[3]))
    forget_after, _ = unlearn(GradientAscent(original, lr=1e-3), dm, 5)
    assert forget_after < 0.5
