"""ImplicitGradientSurgery (EUPMU): the retain weight's update rule and sign, eu vs eu_fast (which
batch measures the retain loss, how many forwards), accumulation, digits, resume, bad input."""

import copy
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_unlearn.methods import ImplicitGradientSurgery
from lightning_unlearn.methods.implicit_gradient_surgery import RetainWeight
from tests.conftest import assert_same_state, quiet_trainer, run_and_resume


def accuracy(model, loader):
    model.eval()
    with torch.no_grad():
        return torch.cat([(model(x).argmax(-1) == y).float() for x, y in loader]).mean().item()


def test_retain_weight_step_is_adam_then_clamp():
    gradients = [0.3, -0.5, -0.2, 0.8, 2.0, 2.0, -0.1]
    ours = RetainWeight(init=0.2, lr=0.5, weight_decay=0.01)
    w = torch.tensor([0.2], requires_grad=True)
    adam = torch.optim.Adam([w], lr=0.5, weight_decay=0.01)
    clamped = False
    for g in gradients:
        ours.step(torch.tensor(g))
        w.grad = torch.tensor([g])
        adam.step()
        with torch.no_grad():
            clamped |= bool(w < 0)
            w.clamp_(min=0.0)
        torch.testing.assert_close(ours.value, w.detach()[0], rtol=1e-6, atol=1e-7)
    assert clamped  # the sequence exercised the clamp at 0
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(getattr(ours, key), adam.state[w][key][0], rtol=1e-6, atol=1e-9)


def test_non_finite_delta_leaves_the_weight_alone():
    weight = RetainWeight(init=1.0, lr=1.0, weight_decay=0.01)
    before = {k: v.clone() for k, v in weight.state_dict().items()}
    weight.step(torch.tensor(float("nan")))
    assert all(torch.equal(before[k], v) for k, v in weight.state_dict().items())


class Recorder(Callback):
    """Per optimiser step: the retain CE the step was computed with and the retain weight after it."""

    def __init__(self):
        self.retain_ce, self.weights = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.retain_ce.append(float(trainer.callback_metrics["train/retain_ce"]))
        self.weights.append(float(pl_module.retain_weight.value))


def frozen_run(original, dm, steps=1, **kwargs):
    """lr = 0: the weights never change, so the retain loss of a batch never drops."""
    L.seed_everything(0)
    method = ImplicitGradientSurgery(original, lr=0.0, momentum=0.0, weight_decay=0.0, **kwargs)
    recorder = Recorder()
    quiet_trainer(max_steps=steps, callbacks=[recorder]).fit(method, datamodule=dm)
    return method, recorder


def test_weight_rises_when_the_retain_loss_does_not_drop(original, digits_classwise):
    method, _ = frozen_run(original, digits_classwise, error=0.01, weight_init=0.0)
    # drop = 0 exactly, delta = -error < 0: Adam's first step moves w by +w_lr
    assert float(method.retain_weight.value) == pytest.approx(1.0, rel=1e-4)
    assert float(method.trainer.callback_metrics["train/retain_log_drop"]) == 0.0


def test_weight_falls_when_the_retain_loss_drops_by_more_than_error(original, digits_classwise):
    # drop = 0 exceeds a required drop of error = -0.05 (a tolerated rise): delta > 0, w shrinks
    method, _ = frozen_run(original, digits_classwise, error=-0.05, weight_init=2.0, w_lr=0.5)
    assert float(method.retain_weight.value) == pytest.approx(1.5, rel=1e-3)  # Adam's first step: -w_lr


def test_weight_rises_while_forgetting_raises_the_retain_loss(original, digits_classwise):
    L.seed_everything(0)
    method = ImplicitGradientSurgery(original, lr=0.05, weight_init=0.0)  # pure forgetting at first
    quiet_trainer(max_steps=3).fit(method, datamodule=digits_classwise)
    assert float(method.retain_weight.value) > 0.0


def test_eu_fast_measures_with_the_next_batch(original, digits_classwise):
    error = 0.01
    _method, recorder = frozen_run(original, digits_classwise, steps=3, mode="eu_fast", error=error, w_lr=0.3)
    assert recorder.weights[0] == 1.0  # weight_init 1.0 for eu_fast; first step: nothing to compare yet
    reference = RetainWeight(init=1.0, lr=0.3, weight_decay=0.01)
    for t in (1, 2):  # step t compares batch t-1 (before the step) with batch t (after it)
        delta = math.log(recorder.retain_ce[t - 1] + 1e-8) - math.log(recorder.retain_ce[t] + 1e-8) - error
        reference.step(torch.tensor(delta))
        assert recorder.weights[t] == pytest.approx(float(reference.value), rel=1e-4)
    assert recorder.retain_ce[0] != recorder.retain_ce[1]  # different batches


@pytest.mark.parametrize("mode, forwards_per_step", [("eu", 2), ("eu_fast", 1)])
def test_forward_passes_per_step(original, digits_classwise, mode, forwards_per_step):
    method = ImplicitGradientSurgery(original, mode=mode)
    calls = []
    method.model.register_forward_hook(lambda *_: calls.append(1))
    quiet_trainer(max_steps=4).fit(method, datamodule=digits_classwise)
    fit_start_checks = 1  # UnlearningMethod.on_fit_start checks the logits once
    assert len(calls) - fit_start_checks == 4 * forwards_per_step


@pytest.mark.parametrize("mode", ["eu", "eu_fast"])
def test_weight_is_updated_once_per_optimizer_step_under_accumulation(original, digits_classwise, mode):
    method = ImplicitGradientSurgery(original, mode=mode)
    quiet_trainer(max_steps=3, accumulate_grad_batches=2, gradient_clip_val=1.0).fit(method, datamodule=digits_classwise)
    assert method.global_step == 3
    assert float(method.retain_weight.steps) == (3 if mode == "eu" else 2)  # eu_fast: at the next step's start


@pytest.mark.parametrize("mode", ["eu", "eu_fast"])
def test_forgets_the_class_and_keeps_retain_accuracy(original, digits_classwise, mode):
    L.seed_everything(0)
    method = ImplicitGradientSurgery(original, mode=mode, lr=0.01, epoch_split="forget")
    quiet_trainer(max_epochs=4).fit(method, datamodule=digits_classwise)
    assert accuracy(method.model, digits_classwise.forget_dataloader()) < 0.1
    assert accuracy(method.model, digits_classwise.retain_dataloader()) > 0.95


def test_eu_fast_resumes_exactly(original, digits_classwise, tmp_path):
    straight, resumed, _ = run_and_resume(
        lambda: ImplicitGradientSurgery(copy.deepcopy(original), mode="eu_fast", lr=0.01), digits_classwise, tmp_path
    )
    assert_same_state(straight.state_dict(), resumed.state_dict())  # network, w, its Adam state, pending retain loss


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="fast"), "mode"),
        (dict(w_lr=0.0), "w_lr"),
        (dict(w_lr=-1.0), "w_lr"),
        (dict(weight_init=-0.1), "weight_init"),
        (dict(w_weight_decay=-0.01), "w_weight_decay"),
        (dict(error=float("nan")), "error"),
    ],
)
def test_bad_arguments_are_rejected(original, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImplicitGradientSurgery(original, **kwargs)
