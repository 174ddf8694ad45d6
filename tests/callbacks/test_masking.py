"""The shared masking adapter: strict freeze through training, exact resume, stacking (the core
itself is tested without a trainer in tests/functional/test_masks.py)."""

import copy

import lightning as L
import pytest
import torch

from lightning_unlearn.callbacks import MaskedUpdateCallback
from tests.callbacks.user_module import UserModule
from tests.conftest import quiet_trainer


class FixedMask(MaskedUpdateCallback):
    """Freezes every other entry (a fixed checkerboard in flat order)."""

    def build_masks(self, trainer, pl_module, named):
        return [(torch.arange(p.numel()) % 2 == 0).view_as(p) for _, p in named]


# ---------------------------------------------------------------------------------- the callback
def _fit(strict, steps=6, **kw):
    module = UserModule(**kw)
    start = copy.deepcopy(module.state_dict())
    callback = FixedMask(strict=strict)
    grads_seen = []

    class Spy(L.Callback):  # runs after FixedMask: sees the masked gradients
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads_seen.append({n: p.grad.clone() for n, p in pl_module.named_parameters()})

    quiet_trainer(max_steps=steps, callbacks=[callback, Spy()]).fit(module)
    return module, start, callback, grads_seen


def test_strict_freeze_keeps_masked_weights_bit_identical_with_momentum_and_weight_decay():
    module, start, callback, _ = _fit(strict=True)
    for name, mask in callback.masks().items():
        value, before = module.state_dict()[name], start[name]
        assert torch.equal(value[~mask], before[~mask]), name
        assert not torch.equal(value[mask], before[mask]), name


def test_non_strict_masks_gradients_only_so_weight_decay_moves_frozen_weights():
    module, start, callback, grads_seen = _fit(strict=False)
    for name, mask in callback.masks().items():
        assert all((g[name][~mask] == 0).all() for g in grads_seen), name
    drift = [not torch.equal(module.state_dict()[n][~m], start[n][~m]) for n, m in callback.masks().items()]
    assert any(drift)


def test_masked_callback_resumes_exactly(tmp_path):
    def run(epochs, ckpt=None, save=None):
        module = UserModule()
        callback = FixedMask()
        trainer = quiet_trainer(max_epochs=epochs, callbacks=[callback])
        trainer.fit(module, ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return module, callback

    straight, cb = run(2)
    run(1, save=tmp_path / "mid.ckpt")
    assert "lightning_unlearn_masks" in torch.load(tmp_path / "mid.ckpt", weights_only=True)
    resumed, cb_resumed = run(2, ckpt=tmp_path / "mid.ckpt")
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert all(torch.equal(cb.masks()[k], v) for k, v in cb_resumed.masks().items())


def test_stacked_masks_enforce_their_intersection():
    class OtherHalf(MaskedUpdateCallback):
        def build_masks(self, trainer, pl_module, named):
            return [(torch.arange(p.numel()) < p.numel() // 2).view_as(p) for _, p in named]

    module = UserModule()
    start = copy.deepcopy(module.state_dict())
    a, b = FixedMask(), OtherHalf()
    quiet_trainer(max_steps=5, callbacks=[a, b]).fit(module)
    for name, value in module.state_dict().items():
        if name in a.masks():
            frozen = ~(a.masks()[name] & b.masks()[name])
            assert torch.equal(value[frozen], start[name][frozen]), name


def test_parameters_of_the_wrong_type_are_rejected_at_construction():
    with pytest.raises(ValueError, match="`parameters` must be a regex, a list of regexes or None, got 3 \\(int\\)"):
        FixedMask(parameters=3)
    assert FixedMask(parameters=("a", "b")).parameters == ["a", "b"]
