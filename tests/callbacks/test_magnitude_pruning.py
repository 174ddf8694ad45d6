"""MagnitudePruning, the adapter: pruned weights stay exactly 0 through training, torch.nn.utils.prune
interop (Lightning's ModelPruning), the IMP schedule, rewinds, exact resume, the recipe it owns, bad
input (the pruning core is tested without a trainer in tests/functional/test_pruning.py)."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelPruning

from lightning_unlearn.callbacks import MagnitudePruning
from lightning_unlearn.functional import PruningRecipe, apply_pruning
from lightning_unlearn.methods import FineTune
from lightning_unlearn.metrics.functional import masks_of, sparsity
from lightning_unlearn.models import SmallCNN
from tests.callbacks import user_module
from tests.conftest import quiet_trainer


def UserModule() -> L.LightningModule:
    return user_module.UserModule(hidden=8)


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
    torch_pruning = ModelPruning(
        "l1_unstructured", amount=0.3, parameter_names=["weight"], use_global_unstructured=False, make_pruning_permanent=False
    )
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


def test_lottery_schedule_trains_prunes_each_layer_and_rewinds_to_the_original_initialisation():
    L.seed_everything(0)
    module = UserModule()
    module.configure_optimizers = lambda: torch.optim.Adam(module.parameters(), lr=1e-2)
    init = copy.deepcopy(module.state_dict())
    callback = MagnitudePruning(amount=0.75, method="imp", rounds=2, schedule="lottery", rewind="start", scope="layer")
    seen = []

    class Probe(L.Callback):  # after MagnitudePruning on the trainer: sees each epoch's start after its round
        def on_train_epoch_start(self, trainer, pl_module):
            masks = callback.masks()
            seen.append({n: float(m.float().mean()) for n, m in masks.items()})
            for name, value in pl_module.state_dict().items():
                mask = masks.get(name, torch.ones_like(value, dtype=torch.bool))
                if trainer.current_epoch in (0, 1, 2):  # every segment starts from the original initialisation
                    assert torch.equal(value, init[name] * mask), (trainer.current_epoch, name)
            if trainer.current_epoch > 0:
                opt = trainer.optimizers[0]
                assert all(p not in opt.state for p in pl_module.parameters())  # a fresh optimiser state per round

    quiet_trainer(max_epochs=3, callbacks=[callback, Probe()]).fit(module)
    # epoch 0 trains dense; round 1 (epoch 1) keeps 50 % of each layer, round 2 (epoch 2) 25 %
    assert [round(v, 3) for v in seen[0].values()] == [1.0, 1.0]
    assert seen[1] == {"net.fc1.weight": 0.5, "net.fc2.weight": 0.5}
    assert seen[2] == {"net.fc1.weight": 0.25, "net.fc2.weight": 0.25}
    trained = module.state_dict()
    assert not torch.equal(trained["net.fc1.weight"], init["net.fc1.weight"] * callback.masks()["net.fc1.weight"])


def test_lottery_schedule_bad_input():
    with pytest.raises(ValueError, match="use method='imp'"):
        MagnitudePruning(schedule="lottery")
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        MagnitudePruning(method="imp", schedule="late")
    with pytest.raises(ValueError, match="max_epochs >= 3"):
        quiet_trainer(max_epochs=2, callbacks=[MagnitudePruning(method="imp", rounds=2, schedule="lottery")]).fit(UserModule())


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
        ({"scope": "model"}, "`scope` must be one of \\('global', 'layer'\\)"),
        ({"rounds": 3}, "applies to method='imp' only"),
        ({"method": "imp", "rounds": 0}, "`rounds` must be an integer >= 1"),
        ({"input_shape": [0, 3]}, "`input_shape`"),
        ({"synflow_iterations": 0}, "`synflow_iterations` must be an integer >= 1"),
        ({"rewind": 3}, "`rewind` must be None or a file path"),
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


def test_the_callback_owns_a_recipe_and_prunes_by_it():
    callback = MagnitudePruning(amount=0.6, structured=True, scope="layer", seed=4)
    assert callback.pruning_recipe() == PruningRecipe(amount=0.6, structured=True, scope="layer", seed=4)
    assert (callback.amount, callback.method, callback.structured, callback.scope, callback.rounds) == (
        0.6,
        "omp",
        True,
        "layer",
        1,
    )
    module = UserModule()
    expected = apply_pruning(copy.deepcopy(module), amount=0.6, structured=True, scope="layer")
    quiet_trainer(max_steps=1, callbacks=[callback]).fit(module)
    assert all(torch.equal(callback.masks()[name], mask) for name, mask in expected.items())
