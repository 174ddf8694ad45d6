"""ParameterRepulsion: pushes any module's parameters away from an anchor, keeps retain accuracy, resumes exactly."""

import copy

import lightning as L
import pytest
import torch

from lightning_unlearn.callbacks import ParameterRepulsion
from lightning_unlearn.functional.repulsion import squared_distance
from lightning_unlearn.methods import FineTune
from lightning_unlearn.metrics import evaluate
from tests.callbacks.user_module import UserModule
from tests.conftest import quiet_trainer


def fine_tune(original, datamodule, callbacks, epochs=3):
    L.seed_everything(0)
    method = FineTune(copy.deepcopy(original), lr=0.05)
    quiet_trainer(max_epochs=epochs, callbacks=callbacks).fit(method, datamodule=datamodule)
    return method.model


def test_repulsion_moves_parameters_away_from_the_anchor_and_keeps_retain_accuracy(original, digits_classwise):
    plain = fine_tune(original, digits_classwise, [])
    repelled = fine_tune(original, digits_classwise, [ParameterRepulsion(anchor=copy.deepcopy(original), weight=1.0)])
    d_plain = float(squared_distance(list(plain.parameters()), list(original.parameters())))
    d_repelled = float(squared_distance(list(repelled.parameters()), list(original.parameters())))
    assert d_repelled > 1.2 * d_plain
    assert evaluate(repelled, digits_classwise)["retain_acc"] > 0.97


def test_start_anchor_on_a_users_module():
    L.seed_everything(0)
    module = UserModule()
    start = copy.deepcopy(module.state_dict())
    callback = ParameterRepulsion(form="negative_l2", weight=1.0, gamma=1.0)
    quiet_trainer(max_steps=3, callbacks=[callback]).fit(module)
    assert set(callback.anchors) == {n for n, p in module.named_parameters() if p.requires_grad}
    assert all(torch.equal(callback.anchors[n], start[n]) for n in callback.anchors)


def test_resume_is_exact(original, digits_classwise, tmp_path):
    def run(epochs, ckpt=None, save=None):
        L.seed_everything(0)
        method = FineTune(copy.deepcopy(original), lr=0.05)
        trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=2, callbacks=[ParameterRepulsion(form="inverse_l2")])
        trainer.fit(method, datamodule=digits_classwise, ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return method

    straight = run(2)
    run(1, save=tmp_path / "mid.ckpt")
    resumed = run(2, ckpt=tmp_path / "mid.ckpt")
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(form="l3"), "`form` must be one of"),
        (dict(weight=-1.0), "`weight`"),
        (dict(gamma=0.0), "`gamma`"),
        (dict(anchor=3), "`anchor` must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParameterRepulsion(**kwargs)


def test_anchor_of_another_architecture_is_refused(original, digits_classwise):
    with pytest.raises(ValueError, match="does not fit the network"):
        fine_tune(original, digits_classwise, [ParameterRepulsion(anchor=torch.nn.Linear(2, 2))], epochs=1)
