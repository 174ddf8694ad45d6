"""Retrain on a given sparse topology, and the two bugs around ``torch.nn.utils.prune``-reparametrised
networks: ``copy_network`` (deep copy) and ``reinitialise`` (``weight_orig`` re-drawn)."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelPruning
from torch import nn
from torch.nn.utils import prune

from lightning_unlearn.callbacks import MagnitudePruning
from lightning_unlearn.functional import apply_pruning
from lightning_unlearn.methods import FineTune, Retrain
from lightning_unlearn.metrics.functional import mask_iou, masks_of
from lightning_unlearn.models import ImageClassifier, SmallCNN
from lightning_unlearn.models.network import copy_network, reinitialise
from tests.conftest import quiet_trainer


def torch_pruned(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    prune.l1_unstructured(net[1], "weight", amount=0.6)
    prune.random_unstructured(net[3], "weight", amount=0.3)
    return net


# ---------------------------------------------------------------------------------- copy_network
def test_copy_network_copies_a_torch_pruned_network_that_deepcopy_refuses():
    net = torch_pruned()
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(net)
    twin = copy_network(net)
    assert twin[1].weight_orig is not net[1].weight_orig
    assert torch.equal(twin[1].weight, net[1].weight) and torch.equal(twin[1].weight_mask, net[1].weight_mask)
    with torch.no_grad():  # the copy's derived weight follows the copy's own weight_orig, not the original's
        twin[1].weight_orig.add_(1.0)
    x = torch.randn(3, 1, 8, 8)
    twin(x)  # the pre-hook recomputes weight = weight_orig * weight_mask
    assert torch.equal(twin[1].weight, (net[1].weight_orig + 1.0) * net[1].weight_mask)
    assert not torch.equal(net[1].weight, twin[1].weight)
    twin[1].weight.sum().backward()  # linked to the copy's parameter, as torch.nn.utils.prune links it
    assert twin[1].weight_orig.grad is not None and net[1].weight_orig.grad is None


def test_copy_network_equals_deepcopy_on_a_plain_network():
    net = SmallCNN()
    twin = copy_network(net)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values()))
    assert all(p is not q for p, q in zip(net.parameters(), twin.parameters()))


# ---------------------------------------------------------------------------------- reinitialise
def test_reinitialise_redraws_weight_orig_and_keeps_the_mask():
    net = torch_pruned()
    trained = net[1].weight_orig.detach().clone()
    mask = net[1].weight_mask.clone()
    reinitialise(net, seed=3)
    assert not torch.equal(net[1].weight_orig, trained)  # the bug: reset_parameters() left weight_orig trained
    assert torch.equal(net[1].weight_mask, mask)
    assert torch.equal(net[1].weight, net[1].weight_orig * mask)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    reinitialise(plain, seed=3)  # the same draw as a plain network of the same shapes
    assert torch.equal(plain[1].weight, net[1].weight_orig) and torch.equal(plain[3].weight, net[3].weight_orig)


# ---------------------------------------------------------------------------------- Retrain on a mask
def sparse_digits_net(original: nn.Module, amount: float = 0.8) -> tuple[nn.Module, dict]:
    sparse = copy.deepcopy(original)
    masks = apply_pruning(sparse, amount=amount)
    return sparse, masks


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_retrain_keeps_the_mask_bit_identically_through_training(original, digits_classwise, optimizer):
    sparse, masks = sparse_digits_net(original)
    kwargs = {} if optimizer == "sgd" else {"optimizer": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-3)}
    method = Retrain(sparse, mask="model", lr=0.05, momentum=0.9, weight_decay=5e-3, **kwargs)
    fresh = {n: p.detach().clone() for n, p in method.model.named_parameters()}
    quiet_trainer(max_epochs=2, limit_train_batches=6).fit(method, datamodule=digits_classwise)
    for name, param in method.model.named_parameters():
        if name in masks:
            pruned = param.detach()[~masks[name]]
            assert torch.equal(pruned, torch.zeros_like(pruned))  # exactly 0, every bit
            assert not torch.equal(param.detach()[masks[name]], fresh[name][masks[name]])  # the rest trained
            assert not torch.equal(fresh[name][masks[name]], sparse.state_dict()[name][masks[name]])  # from fresh weights
    assert float(mask_iou(masks_of(method.model), masks)) == 1.0


def test_retrain_without_a_mask_is_dense_and_magnitude_pruning_would_prune_the_random_init(original, digits_classwise):
    sparse, masks = sparse_digits_net(original)
    dense = Retrain(sparse, lr=0.05)
    assert all(bool((p != 0).all()) for n, p in dense.model.named_parameters() if n in masks)
    # the old workaround: Retrain + MagnitudePruning prunes the fresh weights, not the sparse model's topology
    workaround = Retrain(sparse, lr=0.05)
    pruning = MagnitudePruning(amount=0.8)
    quiet_trainer(max_steps=1, callbacks=[pruning]).fit(workaround, datamodule=digits_classwise)
    assert float(mask_iou(pruning.masks(), masks)) < 0.5


@pytest.mark.parametrize("source", ["path", "checkpoint", "mapping", "callable", "dotted"])
def test_retrain_takes_the_mask_from_every_source(original, digits_classwise, tmp_path, source):
    sparse, masks = sparse_digits_net(original, amount=0.7)
    if source == "path":
        torch.save(sparse.state_dict(), tmp_path / "sparse.pt")
        mask = str(tmp_path / "sparse.pt")
    elif source == "checkpoint":  # a MagnitudePruning run's checkpoint: its recorded masks
        run = FineTune(copy.deepcopy(original), lr=0.01)
        trainer = quiet_trainer(max_steps=1, callbacks=[MagnitudePruning(amount=0.7)])
        trainer.fit(run, datamodule=digits_classwise)
        trainer.save_checkpoint(tmp_path / "omp.ckpt")
        mask, masks = str(tmp_path / "omp.ckpt"), trainer.callbacks[0].masks()
    elif source == "mapping":
        mask = masks
    elif source == "callable":
        mask = lambda network: masks  # noqa: E731
    else:
        mask = "tests.methods.test_retrain_mask.half_of_the_classifier"
        masks = half_of_the_classifier(original)
    method = Retrain(original if source != "path" else sparse, mask=mask)
    assert set(method.topology_masks()) == set(masks)
    assert all(torch.equal(method.topology_masks()[n], m) for n, m in masks.items())
    assert all(bool((p.detach()[~masks[n]] == 0).all()) for n, p in method.model.named_parameters() if n in masks)


def half_of_the_classifier(network: nn.Module) -> dict:
    """A mask callable for the dotted-path test: keep the first half of the head's weights."""
    weight = network.classifier.weight
    return {"classifier.weight": torch.arange(weight.numel()).view_as(weight) < weight.numel() // 2}


def test_retrain_mask_errors(original):
    with pytest.raises(ValueError, match="does not have"):
        Retrain(original, mask={"nope.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        Retrain(original, mask={"classifier.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(FileNotFoundError):
        Retrain(original, mask="no/such/file.ckpt")


def test_retrain_from_given_initial_weights(original):
    start = {k: v.clone() for k, v in SmallCNN().state_dict().items()}
    method = Retrain(original, init=start)
    assert all(torch.equal(v, method.model.state_dict()[k]) for k, v in start.items())


# ---------------------------------------------------------------------------------- wrapping a pruned network
def test_a_torch_pruned_network_is_wrapped_and_retrained_on_its_own_mask(digits_classwise):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    prune.l1_unstructured(net[1], "weight", amount=0.7)
    trained = net[1].weight_orig.detach().clone()
    mask = net[1].weight_mask.clone()
    method = Retrain(net, lr=0.05)
    assert not torch.equal(method.model[1].weight_orig, trained)  # re-initialised, not silently kept
    quiet_trainer(max_epochs=1, limit_train_batches=4).fit(method, datamodule=digits_classwise)
    assert torch.equal(method.model[1].weight_mask, mask)
    assert bool((method.model[1].weight[~mask.bool()] == 0).all())
    assert torch.equal(net[1].weight_orig, trained)  # the user's network is untouched


def test_a_network_pruned_by_lightnings_model_pruning_is_wrapped(digits_classwise):
    net = SmallCNN()
    pruning = ModelPruning("l1_unstructured", amount=0.5, make_pruning_permanent=False, verbose=0)
    quiet_trainer(max_epochs=1, limit_train_batches=3, callbacks=[pruning]).fit(ImageClassifier(net), datamodule=digits_classwise)
    assert hasattr(net.classifier, "weight_orig")  # still reparametrised
    kept = masks_of(net)
    method = FineTune(net, lr=0.01)
    quiet_trainer(max_epochs=1, limit_train_batches=3).fit(method, datamodule=digits_classwise)
    assert float(mask_iou(masks_of(method.model), kept)) == 1.0  # its masks are kept through unlearning
    retrain = Retrain(net, lr=0.05)
    assert not torch.equal(retrain.model.classifier.weight_orig, net.classifier.weight_orig)
    L.seed_everything(0)
