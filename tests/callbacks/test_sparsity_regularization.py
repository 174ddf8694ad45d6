"""SparsityRegularization (l1-sparse), the adapter: the subgradient through training with the per-epoch
and per-step gamma, resume, errors (the schedule is tested without a trainer in
tests/functional/test_pruning.py)."""

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_unlearn.callbacks import SparsityRegularization
from tests.callbacks.user_module import UserModule
from tests.conftest import quiet_trainer


class GradientSpy(L.Callback):
    """Records gradients (and the callback's gamma) at on_before_optimizer_step."""

    def __init__(self, l1=None):
        self.l1, self.grads, self.params, self.gammas = l1, [], [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append({n: p.grad.clone() for n, p in pl_module.named_parameters()})
        self.params.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})
        if self.l1 is not None:
            self.gammas.append((trainer.current_epoch, trainer.global_step, self.l1.gamma))


def test_gradient_is_grad_plus_gamma_sign_theta_with_the_per_epoch_gamma_on_a_user_module():
    l1 = SparsityRegularization(alpha=0.01, schedule="linear_decay", no_l1_epochs=1)
    before, after = GradientSpy(), GradientSpy(l1)
    quiet_trainer(max_epochs=3, limit_train_batches=2, callbacks=[before, l1, after]).fit(UserModule())
    assert [e for e, _, _ in after.gammas] == [0, 0, 1, 1, 2, 2]
    assert [g for _, _, g in after.gammas] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0, 0.0])
    for (_, _, gamma), raw, params, grads in zip(after.gammas, before.grads, before.params, after.grads):
        for name, grad in grads.items():
            torch.testing.assert_close(grad, raw[name] + gamma * torch.sign(params[name]), rtol=0, atol=1e-9, msg=name)


def test_step_interval_uses_the_optimizer_step():
    l1 = SparsityRegularization(alpha=1.0, schedule="linear_growth", interval="step")
    spy = GradientSpy(l1)
    quiet_trainer(max_steps=4, callbacks=[l1, spy]).fit(UserModule())
    assert [g for _, _, g in spy.gammas] == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_parameter_filter_limits_the_penalty():
    l1 = SparsityRegularization(alpha=0.1, schedule="constant", parameters=r"fc2\.weight$")
    before, after = GradientSpy(), GradientSpy(l1)
    quiet_trainer(max_epochs=1, limit_train_batches=1, callbacks=[before, l1, after]).fit(UserModule())
    for name, grad in after.grads[0].items():
        if name == "net.fc2.weight":
            assert not torch.equal(grad, before.grads[0][name])
        else:
            assert torch.equal(grad, before.grads[0][name]), name


def test_l1_increases_sparsity_in_ordinary_training():
    plain, sparse = UserModule(), UserModule()
    quiet_trainer(max_epochs=3).fit(plain)
    quiet_trainer(max_epochs=3, callbacks=[SparsityRegularization(alpha=0.05, schedule="constant")]).fit(sparse)
    l1 = lambda m: sum(p.abs().sum().item() for p in m.parameters())  # noqa: E731
    assert l1(sparse) < l1(plain)


def test_resumes_exactly(tmp_path):
    def run(ckpt=None):
        module = UserModule()
        saver = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
        callbacks = [SparsityRegularization(alpha=0.01), saver]
        quiet_trainer(max_epochs=3, callbacks=callbacks, enable_checkpointing=True).fit(module, ckpt_path=ckpt)
        return module

    straight = run()
    resumed = run(ckpt=tmp_path / "epoch=0.ckpt")
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=-1.0), "`alpha` must be a finite number >= 0, got -1.0"),
        (dict(schedule="cosine"), "`schedule` must be one of"),
        (dict(interval="batch"), "`interval` must be one of \\('epoch', 'step'\\), got 'batch'"),
        (dict(no_l1_epochs=-1), "`no_l1_epochs` must be an integer >= 0"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparsityRegularization(**kwargs)


@pytest.mark.parametrize(
    "callback, trainer_kwargs, match",
    [
        (SparsityRegularization(no_l1_epochs=2), dict(max_epochs=2), "`no_l1_epochs` \\(2\\) must be smaller than max_epochs"),
        (SparsityRegularization(parameters="conv"), dict(max_epochs=1), "`parameters`='conv'.*matched no trainable"),
        (SparsityRegularization(), dict(max_epochs=-1, max_steps=3), "set `max_epochs`"),
    ],
)
def test_bad_setup_raises_before_any_step(callback, trainer_kwargs, match):
    module = UserModule()
    start = copy.deepcopy(module.state_dict())
    with pytest.raises(ValueError, match=match):
        quiet_trainer(callbacks=[callback], **trainer_kwargs).fit(module)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in start.items())
