"""KeepForgotten: distillation toward the previous step's outputs on the earlier forget sets."""

import copy

import lightning as L
import pytest
import torch

from lightning_unlearn.callbacks import KeepForgotten
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.functional.consolidation import consolidation_gradients, teacher_probabilities
from lightning_unlearn.methods import FineTune, GradientAscent
from tests.conftest import quiet_trainer

CHAIN = [ForgetSpec(classes=[3]), ForgetSpec(classes=[5])]


@pytest.fixture(scope="module")
def step1():
    return DigitsDataModule(forget=ForgetSpec(classes=[3])).with_requests(CHAIN, 1)


def test_step_zero_is_a_no_op(original, digits_classwise):
    def run(callbacks):
        L.seed_everything(0)
        method = GradientAscent(copy.deepcopy(original))
        quiet_trainer(max_epochs=1, limit_train_batches=2, callbacks=callbacks).fit(method, datamodule=digits_classwise)
        return method.model.state_dict()

    plain, kept = run([]), run([KeepForgotten()])
    assert all(torch.equal(v, kept[k]) for k, v in plain.items())


def test_targets_are_the_previous_models_outputs_and_the_gradient_is_added(original, step1):
    callback = KeepForgotten(weight=2.0, batch_size=8)
    method = GradientAscent(copy.deepcopy(original), lr=0.0, momentum=0.0)
    seen = {}

    class Spy(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen.setdefault("before", [p.grad.clone() for p in pl_module.model.parameters()])

    # Spy runs first (callbacks are called in order), so "before" is the module's own gradient
    quiet_trainer(max_steps=1, callbacks=[Spy(), callback]).fit(method, datamodule=step1)
    loader = torch.utils.data.DataLoader(step1.earlier_split(), batch_size=64)
    assert torch.allclose(callback.targets, teacher_probabilities(original, loader))
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(len(step1.earlier_split()), (8,), generator=generator)
    x = torch.stack([step1.earlier_split()[int(i)][0] for i in idx])
    net = method.model.eval()
    params = list(net.parameters())
    expected = consolidation_gradients(net, params, x, callback.targets[idx], weight=2.0)
    after = [p.grad for p in params]
    for before, grad, exp in zip(seen["before"], after, expected):
        torch.testing.assert_close(grad - before, exp if exp is not None else torch.zeros_like(grad), rtol=1e-4, atol=1e-6)


def test_resume_is_exact(original, step1, tmp_path):
    def run(epochs, ckpt=None, save=None):
        L.seed_everything(0)
        method = GradientAscent(copy.deepcopy(original))
        callback = KeepForgotten(weight=1.0)
        trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=2, callbacks=[callback])
        trainer.fit(method, datamodule=step1, ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return method, callback

    straight, cb = run(2)
    run(1, save=tmp_path / "mid.ckpt")
    resumed, cb_resumed = run(2, ckpt=tmp_path / "mid.ckpt")
    assert torch.equal(cb.targets, cb_resumed.targets)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weight=0.0), "`weight` must be a finite number > 0"),
        (dict(temperature=-1.0), "`temperature`"),
        (dict(batch_size=0), "`batch_size`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KeepForgotten(**kwargs)


def test_needs_an_unlearning_datamodule(original, digits_classwise):
    with pytest.raises(ValueError, match="KeepForgotten"):
        quiet_trainer(max_steps=1, callbacks=[KeepForgotten()]).fit(
            FineTune(copy.deepcopy(original)), train_dataloaders=digits_classwise.retain_dataloader()
        )
