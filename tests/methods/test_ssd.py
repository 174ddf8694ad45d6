"""SSD and LFSSD: the edit equals a hand computation of the reference formulas on a tiny model,
each split is passed exactly once, nothing else changes, no optimiser step is taken; they forget a
digits class; a resumed run gives the same weights; bad input fails before any weight changes."""

import copy
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lightning_unlearn.data import ForgetSpec, UnlearningDataModule
from lightning_unlearn.methods import LFSSD, SSD
from lightning_unlearn.methods.ssd import ssd_dampen_
from tests.conftest import quiet_trainer, synthetic_dataset
from tests.methods.test_methods import accuracy


class Recording:
    """Mixin recording every (split, x, y) that reaches ``accumulate``."""

    def accumulate(self, split, x, y):
        self.seen_batches.append((split, x.clone(), y.clone()))
        return super().accumulate(split, x, y)


class RecordingSSD(Recording, SSD):
    seen_batches: ClassVar[list] = []


class RecordingLFSSD(Recording, LFSSD):
    seen_batches: ClassVar[list] = []


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)).eval()


def tiny_data(**kwargs):
    """100 blobs in 4 classes; forget class 0 (25 examples, 4 batches of 8), retain 75 (5 of 16)."""
    return UnlearningDataModule(
        synthetic_dataset(100),
        synthetic_dataset(40, seed=1),
        forget=ForgetSpec(classes=[0]),
        batch_size=16,
        forget_batch_size=8,
        **kwargs,
    )


def ce_grad_sq(model, x, y):
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    return [g * g for g in grads]


def logit_norm_abs_grad(model, x, y):
    grads = torch.autograd.grad(model(x).pow(2).sum(1).mean(), list(model.parameters()))
    return [g.abs() for g in grads]


@pytest.mark.parametrize("cls, term", [(RecordingSSD, ce_grad_sq), (RecordingLFSSD, logit_norm_abs_grad)])
def test_edit_equals_the_hand_computation(cls, term):
    model, dm = tiny_model(), tiny_data()
    method = cls(model, alpha=1.5, lam=0.8)
    method.seen_batches = []
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(method, datamodule=dm)
    # No optimiser (Lightning's placeholder only), no optimiser step, and the fit stopped after one epoch.
    assert [type(o).__name__ for o in trainer.optimizers] == ["_MockOptimizer"]
    assert trainer.global_step == 0 and trainer.current_epoch == 1

    # Each split was accumulated exactly once, in batches of the datamodule's sizes.
    for split, indices, size in (("forget", dm.forget_indices, 8), ("retain", dm.retain_indices, 16)):
        batches = [(x, y) for s, x, y in method.seen_batches if s == split]
        assert len(batches) == -(-len(indices) // size)
        xs = torch.cat([x for x, _ in batches])
        expected = dm.train_set.tensors[0][indices]
        assert torch.equal(xs[torch.argsort(xs[:, 0])], expected[torch.argsort(expected[:, 0])])

    # Hand computation of the reference: I_f = mean over forget batches; I_D = mean over all batches of D.
    reference = tiny_model()
    sums = {
        "forget": [torch.zeros_like(p) for p in reference.parameters()],
        "retain": [torch.zeros_like(p) for p in reference.parameters()],
    }
    count = {"forget": 0, "retain": 0}
    for split, x, y in method.seen_batches:
        sums[split] = [a + b for a, b in zip(sums[split], term(reference, x, y))]
        count[split] += 1
    imp_f = [s / count["forget"] for s in sums["forget"]]
    imp_d = [(f + r) / (count["forget"] + count["retain"]) for f, r in zip(sums["forget"], sums["retain"])]
    selected_any = unselected_any = False
    for p_new, p_old, f, d in zip(method.model.parameters(), reference.parameters(), imp_f, imp_d):
        selected = f > 1.5 * d
        expected = p_old * torch.clamp(0.8 * d / f, max=1.0)
        torch.testing.assert_close(p_new[selected], expected[selected].detach(), rtol=1e-5, atol=1e-7)
        assert torch.equal(p_new[~selected], p_old[~selected])  # the rest bit-identical
        selected_any |= bool(selected.any())
        unselected_any |= bool((~selected).any())
    assert selected_any and unselected_any
    for b_new, b_old in zip(method.model.buffers(), reference.buffers()):  # eval mode: BN statistics untouched
        assert torch.equal(b_new, b_old)


def test_dampening_formula_on_known_values():
    p = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    imp_f = torch.tensor([1.0, 10.0, 0.0, 5.0, 3.0])
    imp_d = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    assert ssd_dampen_([p], [imp_f], [imp_d], alpha=2.0, lam=1.0) == 3
    # selected: 10 > 2, 5 > 0, 3 > 2 -> scaled by min(1/10, 1), min(0/5, 1), min(1/3, 1)
    torch.testing.assert_close(p, torch.tensor([1.0, 0.2, 3.0, 0.0, 5.0 / 3.0]))
    q = torch.tensor([2.0])
    ssd_dampen_([q], [torch.tensor([10.0])], [torch.tensor([1.0])], alpha=2.0, lam=20.0)
    assert q.item() == 2.0  # min(lam * I_D / I_f, 1) = 1: never grows


@pytest.mark.parametrize("cls", [SSD, LFSSD])
def test_forgets_a_digits_class_and_keeps_retain(cls, original, digits_classwise):
    method = cls(original, alpha=5.0, lam=1.0)
    quiet_trainer(max_epochs=1).fit(method, datamodule=digits_classwise)
    forget = accuracy(method.model, digits_classwise.forget_dataloader())
    retain = accuracy(method.model, digits_classwise.retain_dataloader())
    assert forget < 0.1 and retain > 0.9  # class 3 gone, the other nine kept
    assert 0 < method.trainer.callback_metrics["edit/selected_fraction"] < 0.2


def test_resumed_run_gives_the_same_weights_and_does_not_edit_twice(tmp_path):
    def fit(epochs, ckpt=None):
        method = SSD(tiny_model(), alpha=1.5)
        trainer = quiet_trainer(max_epochs=epochs)
        trainer.fit(method, datamodule=tiny_data(), ckpt_path=ckpt)
        return method, trainer

    straight, trainer = fit(1)
    trainer.save_checkpoint(tmp_path / "edited.ckpt")
    resumed, trainer = fit(3, ckpt=tmp_path / "edited.ckpt")
    assert resumed.edited and resumed.statistics is None
    for (key, value), other in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(value, other), key
    assert not torch.equal(straight.model[0].weight, tiny_model()[0].weight)


@pytest.mark.parametrize("cls", [SSD, LFSSD])
@pytest.mark.parametrize("kwargs", [dict(alpha=0.0), dict(alpha=-1.0), dict(lam=0.0), dict(lam=-2.0), dict(alpha=float("nan"))])
def test_bad_hyperparameters_are_rejected(cls, kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"`{name}`"):
        cls(tiny_model(), **kwargs)


def test_missing_forget_data_is_an_error_before_any_change():
    method = SSD(tiny_model())
    before = copy.deepcopy(method.model.state_dict())
    with pytest.raises(ValueError, match="UnlearningDataModule"):
        quiet_trainer(max_epochs=1).fit(method, train_dataloaders=DataLoader(synthetic_dataset(20), batch_size=4))
    assert all(torch.equal(before[k], v) for k, v in method.model.state_dict().items())


def test_alpha_that_cannot_select_anything_is_an_error():
    # 4 forget + 5 retain batches: I_D >= 4/9 I_f, so alpha >= 2.25 selects nothing.
    with pytest.raises(ValueError, match=r"alpha.*< 2.25"):
        quiet_trainer(max_epochs=1).fit(SSD(tiny_model(), alpha=3.0), datamodule=tiny_data())
