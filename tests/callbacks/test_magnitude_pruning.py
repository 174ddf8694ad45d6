"""MagnitudePruning: masks vs hand computations, pruned weights stay exactly 0, torch.nn.utils.prune
interop (Lightning's ModelPruning), the IMP schedule, SynFlow vs an independent loop, exact resume."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelPruning
from torch import nn

from lightning_unlearn.callbacks import MagnitudePruning
from lightning_unlearn.callbacks.magnitude_pruning import apply_pruning, synflow_masks
from lightning_unlearn.methods import FineTune
from lightning_unlearn.metrics.functional import masks_of, sparsity
from lightning_unlearn.models import SmallCNN
from tests.callbacks import user_module
from tests.conftest import quiet_trainer

T, F = True, False


def Tiny() -> nn.Module:  # noqa: N802 - the shared test network, 8 hidden units
    return user_module.Tiny(hidden=8)


def UserModule() -> L.LightningModule:  # noqa: N802 - the shared plain user module, 8 hidden units
    return user_module.UserModule(hidden=8)


def hand_net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -6.0, 3.0], [0.5, 3.0, -4.0]]))  # |3| tied at flat 2 and 4
        net[2].weight.copy_(torch.tensor([[5.0, 8.0], [9.0, 7.0]]))
    return net


# ---------------------------------------------------------------------------------- masks by hand
def test_unstructured_global_and_layer_masks_by_hand():
    net = hand_net()
    masks = apply_pruning(net, amount=0.5, scope="global")  # keep 5 of 10: 9, 8, 7, 6, 5
    assert masks["0.weight"].tolist() == [[F, T, F], [F, F, F]]
    assert masks["2.weight"].tolist() == [[T, T], [T, T]]
    assert net[0].weight.tolist() == [[0.0, -6.0, 0.0], [0.0, 0.0, 0.0]]
    masks = apply_pruning(hand_net(), amount=0.5, scope="layer")  # 3 of 6: 6, 4, then the tied 3 at the lower index
    assert masks["0.weight"].tolist() == [[F, T, T], [F, F, T]]
    assert masks["2.weight"].tolist() == [[F, T], [T, F]]


def test_structured_prunes_whole_rows_by_l2_norm():
    # Row norms: layer 0: 6.78, 5.02; layer 2: 9.43, 11.40.
    net = hand_net()
    masks = apply_pruning(net, amount=0.5, structured=True, scope="global")
    assert masks["0.weight"].tolist() == [[F, F, F], [F, F, F]] and bool(masks["2.weight"].all())
    masks = apply_pruning(hand_net(), amount=0.5, structured=True, scope="layer")
    assert masks["0.weight"].tolist() == [[T, T, T], [F, F, F]]
    assert masks["2.weight"].tolist() == [[F, F], [T, T]]


def test_random_pruning_is_seeded_and_exact():
    a = apply_pruning(Tiny(), amount=0.75, method="random", seed=1)
    b = apply_pruning(Tiny(), amount=0.75, method="random", seed=1)
    c = apply_pruning(Tiny(), amount=0.75, method="random", seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    assert float(sparsity(a)) == 0.75


def test_synflow_matches_an_independent_implementation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    amount, iterations = 0.8, 4
    ours = synflow_masks(net, ["0.weight", "2.weight"], [torch.ones(7, 5, dtype=torch.bool), torch.ones(3, 7, dtype=torch.bool)],
                         amount, [5], iterations=iterations)
    # Oracle: a linearised float64 copy, pruned round by round on all weights together.
    lin = copy.deepcopy(net).double()
    with torch.no_grad():
        for p in lin.parameters():
            p.abs_()
    weights = [lin[0].weight, lin[2].weight]
    kept = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    original = [w.detach().clone() for w in weights]
    for k in range(1, iterations + 1):
        with torch.no_grad():
            for w, m, o in zip(weights, kept, original):
                w.copy_(o * m)
        lin.zero_grad()
        lin(torch.ones(1, 5, dtype=torch.float64)).sum().backward()
        scores = torch.cat([torch.where(m, (w.grad * w).abs(), -1.0).flatten() for w, m in zip(weights, kept)])
        keep = round((1 - amount) ** (k / iterations) * scores.numel())
        flat = torch.zeros_like(scores, dtype=torch.bool)
        flat[scores.argsort(descending=True)[:keep]] = True
        kept = [part.view_as(w) for part, w in zip(flat.split([w.numel() for w in weights]), weights)]
    assert all(torch.equal(a, b) for a, b in zip(ours, kept))
    assert net[0].weight.min() < 0  # the network itself was not linearised


# ---------------------------------------------------------------------------------- through training
def test_pruned_weights_stay_exactly_zero_through_sgd_with_momentum_and_weight_decay():
    module = UserModule()
    callback = MagnitudePruning(amount=0.7)

    class Check(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            for name, mask in callback.masks().items():
                assert bool((pl_module.get_parameter(name)[~mask] == 0).all()), name

    start = copy.deepcopy(module.state_dict())
    trainer = quiet_trainer(max_steps=8, callbacks=[callback, Check()])
    trainer.fit(module)
    assert sorted(callback.masks()) == ["net.fc1.weight", "net.fc2.weight"]  # default: conv/linear weights
    assert callback.density == pytest.approx(0.3, abs=1 / 80)
    for name, mask in callback.masks().items():
        assert not torch.equal(module.state_dict()[name][mask], start[name][mask])
        buffer = trainer.optimizers[0].state[module.get_parameter(name)]["momentum_buffer"]
        assert bool((buffer[~mask] == 0).all())


def test_model_pruning_masks_are_folded_in_and_kept():
    module = UserModule()
    torch_pruning = ModelPruning("l1_unstructured", amount=0.3, parameter_names=["weight"], use_global_unstructured=False,
                                 make_pruning_permanent=False)
    quiet_trainer(max_epochs=1, callbacks=[torch_pruning]).fit(module)
    before = {n: m.clone() for n, m in masks_of(module.net).items()}
    callback = MagnitudePruning(amount=0.5)
    quiet_trainer(max_steps=6, callbacks=[callback]).fit(module)
    masks = callback.masks()
    assert sorted(masks) == ["net.fc1.weight_orig", "net.fc2.weight_orig"]  # works on weight_orig
    for name, mask in masks.items():
        layer = module.get_submodule(name.rsplit(".", 1)[0])
        assert not bool((mask & ~before[name[4:].replace("_orig", "")]).any())  # ModelPruning's pruned stay pruned
        assert torch.equal(layer.weight_mask.bool(), mask)  # weight_mask follows our mask
        assert bool((layer.weight_orig[~mask] == 0).all()) and bool((layer.weight[~mask] == 0).all())
    assert float(sparsity(module.net)) == pytest.approx(0.5)


def test_imp_prunes_at_evenly_spaced_epochs():
    def densities(max_epochs):
        callback, seen = MagnitudePruning(amount=0.875, method="imp", rounds=3), []

        class Probe(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                seen.append((callback.density, float(sparsity(pl_module.net))))

        quiet_trainer(max_epochs=max_epochs, limit_train_batches=1, callbacks=[callback, Probe()]).fit(UserModule())
        return seen

    # 1 - (1 - 0.875) ** (k / 3) pruned after round k: densities 1/2, 1/4, 1/8 of the 80 weights.
    assert densities(3) == [(0.5, 0.5), (0.25, 0.75), (0.125, 0.875)]
    assert [d for d, _ in densities(6)] == [0.5, 0.5, 0.25, 0.25, 0.125, 0.125]


def test_omp_with_rewind_to_saved_weights(tmp_path):
    rewind_to = UserModule()
    with torch.no_grad():
        for p in rewind_to.parameters():
            p.add_(1.0)
    torch.save(rewind_to.state_dict(), tmp_path / "early.pt")
    module = UserModule()
    callback = MagnitudePruning(amount=0.5, rewind=str(tmp_path / "early.pt"))

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            for name, mask in callback.masks().items():
                expected = rewind_to.get_parameter(name) * mask
                assert torch.equal(pl_module.get_parameter(name), expected), name

    quiet_trainer(max_steps=1, callbacks=[callback, Probe()]).fit(module)


def test_imp_with_rewind_resumes_exactly_from_a_mid_run_checkpoint(tmp_path):
    def run(ckpt=None, save=False):
        L.seed_everything(0)
        module = UserModule()
        callback = MagnitudePruning(amount=0.75, method="imp", rounds=2, rewind="start", scope="layer")
        callbacks = [callback]
        if save:
            callbacks.append(ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1))
        quiet_trainer(max_epochs=3, enable_checkpointing=save, callbacks=callbacks).fit(module, ckpt_path=ckpt)
        return module, callback

    straight, cb = run(save=True)
    resumed, cb_resumed = run(ckpt=tmp_path / "epoch=0.ckpt")  # before the second round (epoch 1)
    assert cb_resumed.rounds_done == 2 and cb_resumed.density == pytest.approx(0.25)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert all(torch.equal(cb.masks()[k], v) for k, v in cb_resumed.masks().items())


def test_omp_then_finetune_on_digits_keeps_the_mask(digits_classwise):
    callback = MagnitudePruning(amount=0.9, parameters=r"features\.\d+\.0\.weight")  # conv weights, as the reference
    torch.manual_seed(0)
    method = FineTune(SmallCNN(in_channels=1, num_classes=10), lr=0.01)
    quiet_trainer(max_epochs=1, limit_train_batches=4, callbacks=[callback]).fit(method, datamodule=digits_classwise)
    assert sorted(callback.masks()) == ["features.0.0.weight", "features.1.0.weight", "features.2.0.weight"]
    assert callback.density == pytest.approx(0.1, abs=1e-3)
    assert all(bool((method.model.get_parameter(n)[~m] == 0).all()) for n, m in callback.masks().items())
    assert method.original_model.features[0][0].weight.count_nonzero() == method.original_model.features[0][0].weight.numel()


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"amount": 0.0}, "`amount` must be a fraction in \\(0, 1\\]"),
        ({"amount": 1.5}, "`amount` must be a fraction"),
        ({"method": "snip"}, "`method` must be one of"),
        ({"scope": "model"}, "`scope` must be 'global'"),
        ({"rounds": 3}, "applies to method='imp' only"),
        ({"method": "imp", "rounds": 0}, "`rounds` must be an integer >= 1"),
        ({"input_shape": [0, 3]}, "`input_shape`"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MagnitudePruning(**kwargs)


@pytest.mark.parametrize(
    "kwargs, trainer_kwargs, match",
    [
        ({"parameters": "conv"}, {"max_epochs": 1}, "matched no trainable parameter"),
        ({"method": "imp", "rounds": 4}, {"max_epochs": 2}, "needs Trainer\\(max_epochs >= 4\\)"),
        ({"rewind": "missing.pt"}, {"max_epochs": 1}, "`rewind`"),
    ],
)
def test_bad_setups_fail_before_any_weight_changes(kwargs, trainer_kwargs, match):
    module = UserModule()
    start = copy.deepcopy(module.state_dict())
    with pytest.raises(ValueError, match=match):
        quiet_trainer(callbacks=[MagnitudePruning(**kwargs)], **trainer_kwargs).fit(module)
    assert all(torch.equal(v, start[k]) for k, v in module.state_dict().items())
