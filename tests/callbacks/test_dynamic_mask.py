"""DynamicMask, the adapter: warm-up freezes everything, constant density, cosine turnover, resume,
errors (prune-and-regrow itself is tested without a trainer in tests/functional/test_masks.py)."""

import copy
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_unlearn.callbacks import DynamicMask
from lightning_unlearn.functional import turnover_at
from tests.callbacks.user_module import UserModule
from tests.conftest import quiet_trainer


def _run(max_steps=20, callbacks=(), **kwargs):
    module = UserModule()
    start = copy.deepcopy(module.state_dict())
    callback = DynamicMask(**{"density": 0.4, "warmup_steps": 3, "update_every": 2, **kwargs})
    snapshots = {}

    class Snap(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            snapshots[trainer.global_step] = (copy.deepcopy(pl_module.state_dict()), callback.masks())

    quiet_trainer(max_steps=max_steps, callbacks=[callback, Snap(), *callbacks]).fit(module)
    return module, start, callback, snapshots


def test_warmup_freezes_every_weight_then_density_stays_constant_and_turnover_follows_the_schedule():
    _module, start, callback, snapshots = _run()
    for step in (1, 2, 3):  # warm-up: no parameter changes at all (momentum and weight decay included)
        for name in callback.masks():
            assert torch.equal(snapshots[step][0][name], start[name]), (step, name)
    steps = [h["step"] for h in callback.history]
    assert steps == [3, 5, 7, 9, 11, 13, 15]  # every 2 steps after warm-up, none after 0.8 * 20 = 16
    masks_by_step = {s: snapshots[s][1] for s in steps}
    expected_active = {n: max(1, round(0.4 * m.numel())) for n, m in masks_by_step[3].items()}
    for step in steps:
        assert {n: int(m.sum()) for n, m in masks_by_step[step].items()} == expected_active
    for prev, step, record in zip(steps, steps[1:], callback.history[1:]):
        tau = turnover_at(0.2, step / 20)
        assert record["tau"] == pytest.approx(tau)
        per_tensor = {
            n: min(max(1, math.floor(tau * a)), a, masks_by_step[prev][n].numel() - a) for n, a in expected_active.items()
        }
        assert record["swapped"] == sum(per_tensor.values())
        for name, n in per_tensor.items():
            gained = masks_by_step[step][name] & ~masks_by_step[prev][name]
            assert int(gained.sum()) == n, (step, name)
    assert all(torch.equal(callback.masks()[n], m) for n, m in snapshots[15][1].items())


def test_frozen_weights_do_not_move_between_updates():
    _, _, _callback, snapshots = _run()
    for step in range(4, 20):
        prev_state, prev_masks = snapshots[step - 1]
        state = snapshots[step][0]
        for name, mask in prev_masks.items():  # frozen during this step (mask updates come after it)
            assert torch.equal(state[name][~mask], prev_state[name][~mask]), (step, name)


def test_dynamic_mask_resumes_exactly(tmp_path):
    """Interrupted after epoch 2 of 4 (between two mask updates), resumed: same masks, accumulator, weights."""

    def run(ckpt=None):
        module = UserModule()
        callback = DynamicMask(density=0.4, warmup_steps=3, update_every=2)
        saver = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
        quiet_trainer(max_epochs=4, callbacks=[callback, saver], enable_checkpointing=True).fit(module, ckpt_path=ckpt)
        return module, callback

    straight, cb = run()  # 16 steps; updates at 3, 5, ..., 11 (< 0.8 * 16)
    resumed, cb_resumed = run(ckpt=tmp_path / "epoch=1.ckpt")
    assert cb_resumed.history == cb.history and len(cb.history) == 5
    assert all(torch.equal(cb.masks()[k], v) for k, v in cb_resumed.masks().items())
    assert all(torch.equal(a, b) for a, b in zip(cb.accumulator, cb_resumed.accumulator))
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(density=0), "`density` must be a fraction in \\(0, 1\\]"),
        (dict(density=1.2), "`density` must be a fraction in \\(0, 1\\]"),
        (dict(warmup_steps=0), "`warmup_steps` must be an integer >= 1"),
        (dict(update_every=0.5), "`update_every` must be an integer >= 1"),
        (dict(turnover=1.5), "`turnover` must be a fraction in \\[0, 1\\], got 1.5"),
        (dict(stop_fraction=-0.1), "`stop_fraction` must be a fraction in \\[0, 1\\], got -0.1"),
        (dict(scope="row"), "`scope` must be one of \\('global', 'layer'\\)"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicMask(**kwargs)


def test_parameter_filter_matching_nothing_raises():
    with pytest.raises(ValueError, match=r"`parameters`='conv'.*matched no trainable parameter"):
        quiet_trainer(max_steps=2, callbacks=[DynamicMask(parameters="conv")]).fit(UserModule())
