"""KeepTopology: a sparse model's zeros stay exactly zero through any method (prune first, then unlearn),
an un-pruning on the same trainer moves the kept topology, exact resume, bad input."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_unlearn.callbacks import KeepTopology, UnPruning
from lightning_unlearn.functional import apply_pruning
from lightning_unlearn.methods import FineTune, InfluenceUnlearning
from lightning_unlearn.metrics.functional import mask_iou, masks_of
from tests.callbacks.user_module import UserModule
from tests.conftest import quiet_trainer


def sparse(original, amount=0.8):
    net = copy.deepcopy(original)
    return net, apply_pruning(net, amount=amount)


def test_zeros_stay_exactly_zero_through_momentum_weight_decay_and_a_one_shot_edit(original, digits_classwise):
    net, masks = sparse(original)
    method = FineTune(net, lr=0.05, momentum=0.9, weight_decay=5e-3)
    quiet_trainer(max_epochs=1, limit_train_batches=5, callbacks=[KeepTopology()]).fit(method, datamodule=digits_classwise)
    assert float(mask_iou(masks_of(method.model), masks)) == 1.0
    unkept = copy.deepcopy(net)  # without it, one fine-tuning step trains the zeros back
    plain = FineTune(unkept, lr=0.05)
    quiet_trainer(max_steps=1).fit(plain, datamodule=digits_classwise)
    kept = masks_of(plain.model)
    assert sum(int(m.sum()) for m in kept.values()) / sum(m.numel() for m in kept.values()) > 0.9
    edited = InfluenceUnlearning(net, alpha=5.0, num_samples=64)  # edits the weights at epoch end, outside a step
    quiet_trainer(max_epochs=1, callbacks=[KeepTopology()]).fit(edited, datamodule=digits_classwise)
    assert float(mask_iou(masks_of(edited.model), masks)) == 1.0


def test_an_unpruning_on_the_same_trainer_moves_the_kept_topology(original, digits_classwise):
    net, masks = sparse(original, amount=0.7)
    keep, unpruning = KeepTopology(), UnPruning(score="gradient")
    method = FineTune(net, lr=0.01)
    quiet_trainer(max_epochs=1, limit_train_batches=3, callbacks=[keep, unpruning]).fit(method, datamodule=digits_classwise)
    assert not all(torch.equal(unpruning.masks()[n], m) for n, m in masks.items())  # the topology moved
    assert all(torch.equal(keep.masks()[n], unpruning.masks()[n]) for n in masks)  # and KeepTopology took it
    for name, mask in unpruning.masks().items():  # the new pruned set stays exactly 0 (revived weights may still be 0)
        assert bool((method.model.get_parameter(name)[~mask] == 0).all())


def test_a_mask_from_a_checkpoint_is_imposed(tmp_path):
    module = UserModule(hidden=8)
    mask = {"net.fc1.weight": torch.rand(8, 6) < 0.5}
    torch.save({"net.fc1.weight": module.net.fc1.weight.detach() * mask["net.fc1.weight"]}, tmp_path / "sparse.pt")
    keep = KeepTopology(mask=str(tmp_path / "sparse.pt"))
    quiet_trainer(max_steps=4, callbacks=[keep]).fit(module)
    assert torch.equal(module.net.fc1.weight != 0, mask["net.fc1.weight"])
    assert bool(keep.masks()["net.fc2.weight"].all())


def test_resumes_exactly_from_a_mid_run_checkpoint(tmp_path):
    def run(ckpt=None, save=False):
        L.seed_everything(0)
        module = UserModule(hidden=8)
        with torch.no_grad():
            module.net.fc1.weight[:, :3] = 0.0
        callbacks = [KeepTopology()]
        if save:
            callbacks.append(ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1))
        quiet_trainer(max_epochs=2, enable_checkpointing=save, callbacks=callbacks).fit(module, ckpt_path=ckpt)
        return module

    straight = run(save=True)
    resumed = run(ckpt=tmp_path / "epoch=0.ckpt")
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert bool((straight.net.fc1.weight[:, :3] == 0).all())


def test_bad_input():
    with pytest.raises(ValueError, match="`mask` must be None or a file path"):
        KeepTopology(mask=3)
    with pytest.raises(ValueError, match="matched no trainable parameter"):
        quiet_trainer(max_steps=1, callbacks=[KeepTopology(parameters="conv")]).fit(UserModule())
