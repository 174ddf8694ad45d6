"""The masking core: parameter selection, top-k masks, bit packing, strict freeze, checkpoints."""

import copy

import lightning as L
import pytest
import torch
from torch import nn

from lightning_unlearn.callbacks.masking import (
    MaskedParameters,
    MaskedUpdateCallback,
    pack_mask,
    select_parameters,
    topk_mask,
    unpack_mask,
)
from tests.callbacks.user_module import Tiny, UserModule
from tests.conftest import quiet_trainer


class FixedMask(MaskedUpdateCallback):
    """Freezes every other entry (a fixed checkerboard in flat order)."""

    def build_masks(self, trainer, pl_module, named):
        return [(torch.arange(p.numel()) % 2 == 0).view_as(p) for _, p in named]


# ---------------------------------------------------------------------------------- selection
def test_select_parameters_by_regex_default_and_errors():
    net = Tiny()
    names = [n for n, _ in select_parameters(net, None)]
    assert names == ["fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in select_parameters(net, r"weight$")] == ["fc1.weight", "bn.weight", "fc2.weight"]
    assert [n for n, _ in select_parameters(net, ["fc2", "^bn.bias"])] == ["bn.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in select_parameters(net, None, default=lambda n, p: p.ndim > 1)] == ["fc1.weight", "fc2.weight"]
    net.fc1.bias.requires_grad_(False)
    assert "fc1.bias" not in [n for n, _ in select_parameters(net, None)]
    with pytest.raises(ValueError, match="`parameters`.*matched no trainable parameter.*fc1.weight"):
        select_parameters(net, "conv")
    with pytest.raises(ValueError, match="invalid regex"):
        select_parameters(net, "(")


# ---------------------------------------------------------------------------------- top-k
def test_topk_mask_global_matches_hand_computation_with_ties():
    a = torch.tensor([[0.1, 0.9], [0.5, 0.5]])
    b = torch.tensor([0.5, 0.2, 0.95])
    # ranking over [0.1, .9, .5, .5 | .5, .2, .95]: .95(b2), .9(a1), then the ties .5 in flat order: a2, a3, b0
    masks = topk_mask([a, b], 4 / 7, "global")
    assert masks[0].tolist() == [[False, True], [True, True]]
    assert masks[1].tolist() == [False, False, True]
    masks = topk_mask([a, b], 3 / 7, "global")
    assert masks[0].tolist() == [[False, True], [True, False]] and masks[1].tolist() == [False, False, True]
    assert sum(int(m.sum()) for m in topk_mask([a, b], 0.5, "global")) == round(0.5 * 7)
    assert all(m.dtype == torch.bool and m.shape == s.shape for m, s in zip(masks, [a, b]))


def test_topk_mask_layer_scope_keeps_a_fraction_of_every_tensor():
    a = torch.tensor([3.0, 1.0, 2.0, 2.0])
    b = torch.tensor([0.0, 0.0, 0.0])
    masks = topk_mask([a, b], 0.5, "layer")
    assert masks[0].tolist() == [True, False, True, False]  # 3, then the first 2 (tie)
    assert masks[1].tolist() == [True, True, False]  # round(1.5) = 2, ties by position
    tiny = topk_mask([a, b], 0.01, "layer")
    assert [int(m.sum()) for m in tiny] == [1, 1]  # at least one per tensor
    assert all(m.all() for m in topk_mask([a, b], 1.0, "layer"))


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan")])
def test_topk_mask_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="`fraction` must be a fraction in \\(0, 1\\]"):
        topk_mask([torch.ones(3)], fraction, "global")


def test_topk_mask_rejects_unknown_scope():
    with pytest.raises(ValueError, match="`scope` must be 'global'"):
        topk_mask([torch.ones(3)], 0.5, "tensor")


def test_pack_unpack_roundtrip():
    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (8,), (3, 5, 2), (0,)]:
        mask = torch.rand(shape, generator=g) > 0.5
        packed = pack_mask(mask)
        assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
        assert torch.equal(unpack_mask(packed, shape), mask)
    assert pack_mask(torch.tensor([True, False, False, False, False, False, False, True])).tolist() == [129]


# ---------------------------------------------------------------------------------- MaskedParameters
def test_masked_parameters_restore_and_optimizer_state():
    p = nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    masked = MaskedParameters(["p"], [p], [torch.tensor([True, False, True, False])])
    masked.capture_anchor()
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        p.grad = torch.ones(4)
        masked.mask_gradients()
        assert p.grad.tolist() == [1.0, 0.0, 1.0, 0.0]
        opt.step()
        masked.restore_frozen(opt)
        assert p[1].item() == 2.0 and p[3].item() == 4.0
        assert opt.state[p]["momentum_buffer"][[1, 3]].tolist() == [0.0, 0.0]
    assert p[0].item() != 1.0
    assert masked.density() == 0.5
    masked.set_anchor_zero()
    masked.apply()
    assert p[1].item() == 0.0 and p[3].item() == 0.0


def test_masked_parameters_state_dict_roundtrip():
    net, other = Tiny(), Tiny()
    other.load_state_dict(net.state_dict())
    named = select_parameters(net, None)
    masks = topk_mask([torch.randn_like(p) for _, p in named], 0.3, "global")
    masked = MaskedParameters([n for n, _ in named], [p for _, p in named], masks)
    masked.capture_anchor()
    state = copy.deepcopy(masked.state_dict())
    assert all(m.dtype == torch.uint8 for m in state["masks"])
    restored = MaskedParameters.from_state_dict(other, state)
    assert all(torch.equal(a, b) for a, b in zip(restored.masks, masked.masks))
    assert all(torch.equal(a, b) for a, b in zip(restored.anchor, masked.anchor))
    with pytest.raises(ValueError, match="same model and `parameters` filter"):
        MaskedParameters(["x"], [nn.Parameter(torch.ones(2))], [torch.ones(2, dtype=torch.bool)]).load_state_dict(state)


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
