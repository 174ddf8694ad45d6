"""SCRUB: the max/min schedule, a frozen teacher, exact resume, forgetting on digits with the
settings of configs/digits/scrub.yaml, and clear errors for bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import SCRUB
from lightning_unlearn.methods.scrub import scrub_distance
from tests.conftest import assert_same_state, quiet_trainer, run_and_resume
from tests.methods.test_methods import accuracy

CONFIG = Path(__file__).parents[2] / "lightning_unlearn" / "configs" / "digits" / "scrub.yaml"


class PhaseRecorder(Callback):
    """Records (epoch, batch, phase) at every optimiser step."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, str]] = []
        self.batch_idx = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_idx = batch_idx

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps.append((trainer.current_epoch, self.batch_idx, pl_module.phase))


class RecordingSCRUB(SCRUB):
    """Records the size of every forget batch of a max-step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_sizes: list[int] = []

    def max_loss(self, x_forget):
        self.max_sizes.append(len(x_forget))
        return super().max_loss(x_forget)


def test_distance_is_temperature_squared_kl_from_teacher_to_student():
    g = torch.Generator().manual_seed(0)
    z_s, z_t, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), 3.0
    p_t, p_s = F.softmax(z_t / t, 1), F.softmax(z_s / t, 1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * t**2
    torch.testing.assert_close(scrub_distance(z_s, z_t, t), expected)
    assert scrub_distance(z_t, z_t, t).abs() < 1e-6


def test_phases_alternate_on_schedule_and_the_teacher_never_changes(original, digits_classwise):
    method = RecordingSCRUB(original, msteps=2)
    teacher_state = copy.deepcopy(method.teacher.state_dict())
    recorder = PhaseRecorder()
    quiet_trainer(max_epochs=3, limit_train_batches=5, callbacks=[recorder]).fit(method, datamodule=digits_classwise)

    # |D_f| = 146 in forget batches of 64: 3 max-steps (64, 64, 18) = one pass over D_f per max epoch
    forget_size = len(digits_classwise.forget_indices)
    assert method.max_sizes == [64, 64, forget_size - 128] * 2
    expected = []
    for epoch in range(3):
        for batch in range(5):
            if epoch < 2 and batch < 3:
                expected.append((epoch, batch, "max"))
            expected.append((epoch, batch, "min"))
    assert recorder.steps == expected

    teacher = method.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
        assert torch.equal(value, original.state_dict()[key]), key
    in_optimizer = {id(p) for group in method.trainer.optimizers[0].param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in method.model.parameters()}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}


def test_resumes_exactly_across_the_end_of_the_max_epochs(original, digits_classwise, tmp_path):
    straight, resumed, path = run_and_resume(
        lambda: SCRUB(copy.deepcopy(original), msteps=1, lr=0.01), digits_classwise, tmp_path, limit_train_batches=4
    )
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())

    checkpoint = torch.load(path, weights_only=True)
    assert all(key.startswith("model.") for key in checkpoint["state_dict"])  # the teacher is not stored
    other = SCRUB(copy.deepcopy(straight.model))  # a different "original": the run cannot continue
    with pytest.warns(UserWarning, match="teacher"):
        other.on_load_checkpoint(checkpoint)


def test_forgets_a_digit_class_with_the_config_settings(original, digits_classwise):
    config = yaml.safe_load(CONFIG.read_text())
    init_args = {k: v for k, v in config["model"]["init_args"].items() if k not in ("model", "weights")}
    data_args = config["data"]["init_args"]
    dm = DigitsDataModule(
        forget=ForgetSpec(**data_args["forget"]),
        batch_size=data_args["batch_size"],
        forget_batch_size=data_args["forget_batch_size"],
    )
    assert accuracy(original, dm.forget_dataloader()) > 0.95
    L.seed_everything(config["seed_everything"])
    method = SCRUB(original, **init_args)
    quiet_trainer(max_epochs=config["trainer"]["max_epochs"]).fit(method, datamodule=dm)
    assert accuracy(method.model, dm.forget_dataloader()) < 0.2
    assert accuracy(method.model, dm.retain_dataloader()) > 0.95


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=-0.1), "alpha"),
        (dict(gamma=-1.0), "gamma"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-4.0), "temperature"),
        (dict(msteps=-1), "msteps"),
        (dict(msteps=1.5), "msteps"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(original, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SCRUB(original, **kwargs)


def test_rejects_a_forget_pass_longer_than_an_epoch_before_any_step(original):
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]), batch_size=64, forget_batch_size=4)  # 37 > 21 batches
    method = SCRUB(original)
    state = copy.deepcopy(method.model.state_dict())
    with pytest.raises(ValueError, match="forget_batch_size"):
        quiet_trainer(max_epochs=1).fit(method, datamodule=dm)
    assert all(torch.equal(v, state[k]) for k, v in method.model.state_dict().items())


def test_manual_optimisation_rejects_trainer_gradient_clipping(original, digits_classwise):
    with pytest.raises(MisconfigurationException, match="clipping"):
        quiet_trainer(max_epochs=1, gradient_clip_val=1.0).fit(SCRUB(original), datamodule=digits_classwise)


def test_epoch_schedulers_are_stepped_once_per_epoch(original, digits_classwise):
    seen = []

    class LRRecorder(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    method = SCRUB(original, lr=0.01, lr_scheduler=lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [1], 0.1))
    trainer = quiet_trainer(max_epochs=3, limit_train_batches=2, callbacks=[LRRecorder()])
    trainer.fit(method, datamodule=digits_classwise)
    assert seen == pytest.approx([0.01, 0.001, 0.001])


def test_teachers_follow_device_and_dtype_moves(original):
    method = SCRUB(original).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in method.teacher.parameters())
    assert not method.teacher.training
