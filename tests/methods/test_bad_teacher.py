"""Bad Teacher: the loss against a hand computation, the 30 % retain allocation, frozen teachers,
forgetting on digits with the settings of configs/digits/bad_teacher.yaml, and bad input."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import BadTeacher
from lightning_unlearn.methods.bad_teacher import bad_teacher_loss
from lightning_unlearn.methods.teachers import fingerprint_module
from lightning_unlearn.models import SmallCNN
from tests.conftest import quiet_trainer
from tests.methods.test_methods import accuracy

CONFIG = yaml.safe_load((Path(__file__).parents[2] / "lightning_unlearn" / "configs" / "digits" / "bad_teacher.yaml").read_text())


def config_datamodule() -> DigitsDataModule:
    data = CONFIG["data"]["init_args"]
    return DigitsDataModule(
        forget=ForgetSpec(**data["forget"]), batch_size=data["batch_size"], forget_batch_size=data["forget_batch_size"]
    )


def config_method(original: nn.Module, **overrides) -> BadTeacher:
    init_args = {k: v for k, v in CONFIG["model"]["init_args"].items() if k not in ("model", "weights")}
    return BadTeacher(original, **{**init_args, **overrides})


class RecordingBadTeacher(BadTeacher):
    """Records the forget and retain sizes of every step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes: list[tuple[int, int]] = []

    def unlearning_loss(self, batch):
        self.sizes.append((len(batch["forget"][0]), len(batch["retain"][0])))
        return super().unlearning_loss(batch)


def kl(p, q):
    return (p * (p.log() - q.log())).sum(1)


def test_loss_is_the_expected_mixed_batch_kl_to_the_right_teacher():
    g = torch.Generator().manual_seed(0)
    s_f, s_r, d_f, c_r = (torch.randn(n, 5, generator=g) for n in (3, 7, 3, 7))
    t, share = 2.0, 0.25
    loss, forget_kl, retain_kl = bad_teacher_loss(s_f, s_r, d_f, c_r, share, t)
    q_f, q_r = F.softmax(s_f / t, 1), F.softmax(s_r / t, 1)
    expected_f, expected_r = kl(F.softmax(d_f / t, 1), q_f).mean(), kl(F.softmax(c_r / t, 1), q_r).mean()
    torch.testing.assert_close(forget_kl, expected_f)
    torch.testing.assert_close(retain_kl, expected_r)
    torch.testing.assert_close(loss, share * expected_f + (1 - share) * expected_r)
    # with the reference's composition (share = n_f / (n_f + n_r)) it is the plain mean over the mixed batch
    mixed = torch.cat([kl(F.softmax(d_f / t, 1), q_f), kl(F.softmax(c_r / t, 1), q_r)]).mean()
    torch.testing.assert_close(bad_teacher_loss(s_f, s_r, d_f, c_r, 3 / 10, t)[0], mixed)
    empty = bad_teacher_loss(s_f, s_r[:0], d_f, c_r[:0], share, t)
    torch.testing.assert_close(empty[0], share * expected_f)


def test_an_epoch_is_d_f_once_with_thirty_percent_of_d_r(original):
    dm = config_datamodule()
    method = RecordingBadTeacher(original)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(max_epochs=2).fit(method, datamodule=dm)
    assert not [w for w in caught if "BadTeacher" in str(w.message)]
    forget_size, subset = len(dm.forget_indices), int(0.3 * len(dm.retain_indices))
    epoch = method.sizes[: len(method.sizes) // 2]
    assert sum(f for f, _ in epoch) == forget_size and sum(r for _, r in epoch) == subset
    assert method.sizes[len(epoch) :] == epoch  # the same allocation every epoch
    assert method.forget_share == pytest.approx(forget_size / (forget_size + subset))
    ratio = subset / forget_size  # each step mixes its samples in the reference's proportion
    assert all(abs(r - ratio * f) < 1 for f, r in epoch)


def test_small_retain_batches_warn_and_keep_the_weights(original, digits_classwise):
    method = RecordingBadTeacher(original)  # digits' default batches of 64: 64 forget need 170 retained
    with pytest.warns(UserWarning, match="batch_size >= 170"):
        quiet_trainer(max_epochs=1).fit(method, datamodule=digits_classwise)
    assert method.sizes == [(64, 64), (64, 64), (18, 387 - 387 * 128 // 146)]  # capped at 64, then the rest


def test_teachers_are_frozen_copies_and_never_change(original):
    user_incompetent = SmallCNN(in_channels=1, num_classes=10).train()
    method = BadTeacher(original, incompetent=user_incompetent)
    assert user_incompetent.training and all(p.requires_grad for p in user_incompetent.parameters())
    assert method.incompetent is not user_incompetent
    assert fingerprint_module(method.incompetent) == fingerprint_module(user_incompetent)
    assert fingerprint_module(method.competent) == fingerprint_module(original)
    before = {name: fingerprint_module(t) for name, t in (("c", method.competent), ("i", method.incompetent))}

    quiet_trainer(max_epochs=1).fit(method, datamodule=config_datamodule())
    assert before == {name: fingerprint_module(t) for name, t in (("c", method.competent), ("i", method.incompetent))}
    for teacher in (method.competent, method.incompetent):
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    optimizer = method.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-4
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in method.model.parameters()}
    assert all(key.startswith("model.") for key in method.state_dict())  # teachers stay out of checkpoints


def test_default_incompetent_teacher_is_a_seeded_reinitialisation(original):
    first, again, other = BadTeacher(original), BadTeacher(original), BadTeacher(original, incompetent_seed=1)
    assert fingerprint_module(first.incompetent) == fingerprint_module(again.incompetent)
    assert fingerprint_module(first.incompetent) != fingerprint_module(other.incompetent)
    assert not torch.equal(first.incompetent.classifier.weight, original.classifier.weight)
    assert isinstance(BadTeacher(original).configure_optimizers(), torch.optim.Adam)  # the reference's Adam, lr 1e-4


def test_forgets_a_digit_class_with_the_config_settings(original):
    dm = config_datamodule()
    assert accuracy(original, dm.forget_dataloader()) > 0.95
    L.seed_everything(CONFIG["seed_everything"])
    method = config_method(original)
    quiet_trainer(max_epochs=CONFIG["trainer"]["max_epochs"]).fit(method, datamodule=dm)
    assert accuracy(method.model, dm.forget_dataloader()) < 0.2
    assert accuracy(method.model, dm.retain_dataloader()) > 0.95


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(retain_fraction=0.0), "retain_fraction"),
        (dict(retain_fraction=1.5), "retain_fraction"),
        (dict(retain_fraction=-0.3), "retain_fraction"),
        (dict(incompetent="random"), "incompetent"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(original, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BadTeacher(original, **kwargs)


def test_incompetent_teacher_with_the_wrong_logits_is_rejected_before_any_step(original):
    method = BadTeacher(original, incompetent=SmallCNN(in_channels=1, num_classes=5))
    state = copy.deepcopy(method.model.state_dict())
    with pytest.raises(ValueError, match="incompetent"):
        quiet_trainer(max_epochs=1).fit(method, datamodule=config_datamodule())
    assert all(torch.equal(v, state[k]) for k, v in method.model.state_dict().items())
