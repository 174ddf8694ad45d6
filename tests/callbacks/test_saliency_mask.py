"""SaliencyMask (SalUn), the adapter: the mask is the top-k of the saliency at fit start, strict
freeze, resume, errors, digits (the saliency itself is tested without a trainer in
tests/functional/test_saliency.py)."""

import copy

import pytest
import torch

from lightning_unlearn.callbacks import SaliencyMask
from lightning_unlearn.functional import topk_mask
from lightning_unlearn.methods import RandomLabel
from tests.callbacks.user_module import UserModule, forget_loader
from tests.conftest import quiet_trainer
from tests.functional.test_saliency import independent_saliency


def _fit(strict, threshold=0.5, scope="global", steps=6):
    module = UserModule()
    start = copy.deepcopy(module.state_dict())
    expected = independent_saliency(module, forget_loader())
    callback = SaliencyMask(threshold=threshold, scope=scope, strict=strict, dataloader=forget_loader())
    quiet_trainer(max_steps=steps, callbacks=[callback]).fit(module)
    return module, start, callback, expected


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_mask_is_topk_of_the_saliency_at_fit_start_on_a_user_module(scope):
    _module, _, callback, expected = _fit(strict=True, threshold=0.3, scope=scope)
    masks = callback.masks()
    assert list(masks) == list(expected)  # every parameter of the plain module, named as its own
    names = list(expected)
    for name, mask in zip(names, topk_mask([expected[n] for n in names], 0.3, scope, rounding="floor")):
        assert torch.equal(masks[name], mask), name
    total = sum(m.numel() for m in masks.values())
    if scope == "global":
        assert sum(int(m.sum()) for m in masks.values()) == int(0.3 * total)  # the reference's int(n * t)


def test_strict_saliency_mask_freezes_masked_out_weights_bit_identically():
    module, start, callback, _ = _fit(strict=True)
    moved = 0
    for name, mask in callback.masks().items():
        assert torch.equal(module.state_dict()[name][~mask], start[name][~mask]), name
        moved += int((module.state_dict()[name][mask] != start[name][mask]).sum())
    assert moved > 0


def test_non_strict_saliency_mask_lets_weight_decay_move_masked_out_weights():
    module, start, callback, _ = _fit(strict=False)
    assert any(not torch.equal(module.state_dict()[n][~m], start[n][~m]) for n, m in callback.masks().items())


def test_salun_resumes_exactly_without_recomputing_the_saliency(original, digits_classwise, tmp_path):
    def run(epochs, ckpt=None, save=None):
        callback = SaliencyMask(threshold=0.5)
        method = RandomLabel(copy.deepcopy(original))
        trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=2, callbacks=[callback])
        trainer.fit(method, datamodule=digits_classwise, ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return method, callback

    straight, cb = run(2)
    run(1, save=tmp_path / "mid.ckpt")
    resumed, cb_resumed = run(2, ckpt=tmp_path / "mid.ckpt")
    assert all(torch.equal(cb.masks()[k], v) for k, v in cb_resumed.masks().items())
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


@torch.no_grad()
def accuracies(model, datamodule):
    model.eval()
    return {
        f"{split}_acc": torch.cat([(model(x).argmax(-1) == y).float() for x, y in loader]).mean().item()
        for split, loader in (("forget", datamodule.forget_dataloader()), ("retain", datamodule.retain_dataloader()))
    }


def test_salun_on_digits_classwise_forgets_and_keeps_retain_accuracy(original, digits_classwise):
    before = accuracies(original, digits_classwise)
    callback = SaliencyMask(threshold=0.5)
    method = RandomLabel(original, lr=0.05)  # the reference's 0.013 leaves a digits class recognised in 2 epochs
    quiet_trainer(max_epochs=2, callbacks=[callback]).fit(method, datamodule=digits_classwise)
    after = accuracies(method.model, digits_classwise)
    assert callback.density == pytest.approx(0.5, abs=1e-6)
    assert before["forget_acc"] > 0.9
    assert after["forget_acc"] < 0.3 * before["forget_acc"]
    assert after["retain_acc"] > before["retain_acc"] - 0.03
    frozen = {n: ~m for n, m in callback.masks().items()}
    for (name, value), (_, start) in zip(method.model.named_parameters(), original.named_parameters()):
        assert torch.equal(value.detach()[frozen[name]], start.detach()[frozen[name]]), name


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(threshold=0), "`threshold` must be a fraction in \\(0, 1\\]"),
        (dict(threshold=1.5), "`threshold` must be a fraction in \\(0, 1\\]"),
        (dict(scope="tensor"), "`scope` must be one of \\('global', 'layer'\\)"),
        (dict(loss="kl"), "`loss` must be one of"),
        (dict(seed="0"), "`seed` must be an integer"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SaliencyMask(**kwargs)


def test_no_forget_data_raises_before_any_step():
    module = UserModule()
    start = copy.deepcopy(module.state_dict())
    with pytest.raises(ValueError, match=r"SaliencyMask needs forget data.*dataloader="):
        quiet_trainer(max_steps=2, callbacks=[SaliencyMask()]).fit(module)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in start.items())


def test_parameter_filter_matching_nothing_raises():
    with pytest.raises(ValueError, match=r"`parameters`='conv'.*matched no trainable parameter"):
        quiet_trainer(max_steps=2, callbacks=[SaliencyMask(parameters="conv", dataloader=forget_loader())]).fit(UserModule())
