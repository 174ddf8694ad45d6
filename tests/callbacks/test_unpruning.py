"""UnPruning, the adapter: the topology moves toward the retain-only reference on a case built so that
the forget set controls some weights; structured masks; the protocol with pruning callbacks; exact
resume; composition; bad input (the core is tested without a trainer in tests/functional/test_unpruning.py)."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn.utils import prune

from lightning_unlearn.callbacks import MagnitudePruning, TopologyCallback, UnPruning
from lightning_unlearn.functional import PruningRecipe, apply_pruning
from lightning_unlearn.methods import FineTune, RandomLabel
from lightning_unlearn.metrics import topology_report
from lightning_unlearn.metrics.functional import mask_iou, sparsity
from tests.conftest import quiet_trainer
from tests.functional.built_case import D, K, built_data, built_datamodule, built_models, linear_net

T, F = True, False


@pytest.fixture(scope="module")
def models():
    return built_models()


# ---------------------------------------------------------------------------------- the built case
@pytest.mark.parametrize(
    "score, mode",
    [("retain_magnitude", "one_shot"), ("taylor", "one_shot"), ("gradient", "one_shot"), ("retain_magnitude", "gradual")],
)
def test_unpruning_moves_the_topology_toward_the_retain_only_reference(models, score, mode, tmp_path):
    full, reference, retained = models
    torch.save({f"model.{k}": v.float() for k, v in reference.items()}, tmp_path / "reference.pt")
    unpruning = UnPruning(score=score, mode=mode, update_every=1, stop_fraction=1.0, reference=str(tmp_path / "reference.pt"))
    method = FineTune(copy.deepcopy(full), lr=0.01)
    quiet_trainer(max_epochs=1, callbacks=[MagnitudePruning(amount=0.5), unpruning]).fit(method, datamodule=built_datamodule())

    report = topology_report(method.trainer.callbacks)
    original_iou = float(mask_iou(unpruning.topology_before(), reference))
    assert report["iou_original"] == pytest.approx(original_iou) and original_iou < 0.7  # D_f shaped the mask
    assert report["iou_unpruned"] > report["iou_original"] + 0.25 and report["gain"] > 0.25
    assert report["sparsity"] == 0.5 and float(sparsity(method.model)) == 0.5
    kept = unpruning.masks()["0.weight"]
    assert not bool(kept[:, 8:].any())  # no weight reading forget-only features survives
    assert bool((method.model[0].weight[~kept] == 0).all())
    # A dense retain-only checkpoint (e.g. a plain Retrain run) is pruned the same way for the report.
    torch.save({f"model.{k}": v for k, v in retained.state_dict().items()}, tmp_path / "retrain.ckpt")
    unpruning.reference, unpruning._reference = str(tmp_path / "retrain.ckpt"), None
    assert torch.equal(unpruning.topology_reference()["0.weight"], reference["0.weight"])


def test_one_shot_revives_at_the_values_before_pruning_or_at_zero(models):
    full = models[0]
    for revive in ("original", "zero"):
        pruning, unpruning = MagnitudePruning(amount=0.5), UnPruning(revive=revive)

        class Probe(L.Callback):
            def __init__(self, pruning, unpruning, revive):
                self.pruning, self.unpruning, self.revive = pruning, unpruning, revive

            def on_train_start(self, trainer, pl_module):
                pruning, unpruning, revive = self.pruning, self.unpruning, self.revive
                before, after = unpruning.topology_before()["0.weight"], unpruning.masks()["0.weight"]
                revived, weight = after & ~before, pl_module.model[0].weight
                assert bool(revived.any()) and bool((weight[~after] == 0).all())
                expected = full[0].weight[revived] if revive == "original" else torch.zeros(int(revived.sum()))
                assert torch.equal(weight[revived], expected)
                assert torch.equal(pruning.masks()["0.weight"], after)  # written into MagnitudePruning

        method = FineTune(copy.deepcopy(full))
        quiet_trainer(max_steps=1, callbacks=[unpruning, pruning, Probe(pruning, unpruning, revive)]).fit(
            method, datamodule=built_datamodule()
        )


class RecipePruning(TopologyCallback):
    """A user's own pruning callback, unrelated to MagnitudePruning: it only speaks the protocol."""

    anchor = "zero"

    def __init__(self):
        super().__init__(parameters=r"weight$")
        self.recipe = PruningRecipe(amount=0.5, scope="layer")

    def pruning_recipe(self):
        return self.recipe

    def build_masks(self, trainer, pl_module, named):
        return self.recipe.masks([p.detach() for _, p in named])

    def change_topology(self, trainer, pl_module):
        self.remember_pruned([~m for m in self.masked.masks])
        self.masked.set_anchor_zero()
        self.masked.apply()


def test_unpruning_finds_pruning_callbacks_by_the_protocol_not_by_class(models, tmp_path):
    full, _, retained = models
    pruning, unpruning = RecipePruning(), UnPruning(scope="global")

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            before, after = unpruning.topology_before()["0.weight"], unpruning.masks()["0.weight"]
            revived, weight = after & ~before, pl_module.model[0].weight
            assert bool(revived.any()) and torch.equal(weight[revived], full[0].weight[revived])  # values recorded for it
            assert torch.equal(pruning.masks()["0.weight"], after)  # adopted
            assert int(before.sum()) == 32  # its own rule: half of the tensor

    method = FineTune(copy.deepcopy(full))
    quiet_trainer(max_steps=1, callbacks=[unpruning, pruning, Probe()]).fit(method, datamodule=built_datamodule())
    assert unpruning._resolved == {"scope": "global", "structured": False}
    # a dense reference is pruned with the pruning callback's recipe
    torch.save({f"model.{k}": v for k, v in retained.state_dict().items()}, tmp_path / "retrain.ckpt")
    unpruning.reference = str(tmp_path / "retrain.ckpt")
    expected = pruning.recipe.masks([retained[0].weight.detach()])[0]
    assert torch.equal(unpruning.topology_reference()["0.weight"], expected)


def test_structured_unpruning_swaps_whole_rows():
    # fc1 rows 0-4 read the retained features; row 5 reads forget-only features and has the largest norm.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, 6), nn.ReLU(), nn.Linear(6, K))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[:5, :8] = torch.randn(5, 8)
        net[0].weight[5, 8:] = 3.0
    pruning = MagnitudePruning(amount=0.5, structured=True, parameters=r"^0\.weight$")
    unpruning = UnPruning()
    method = FineTune(net, lr=0.01)
    quiet_trainer(max_steps=3, callbacks=[pruning, unpruning]).fit(method, datamodule=built_datamodule())
    before, after = unpruning.topology_before()["0.weight"], unpruning.masks()["0.weight"]
    assert bool(before[5].all()) and not bool(after[5].any())  # the forget-driven filter is dropped
    assert int(after.all(dim=1).sum()) == int(before.all(dim=1).sum()) == 3
    assert bool((after.all(dim=1) | ~after.any(dim=1)).all())  # whole rows only
    assert bool((method.model[0].weight[~after] == 0).all())


def first_entries_score(ctx):
    """A custom score: prefer lower flat positions."""
    return [torch.linspace(1.0, 0.0, w.numel()).view_as(w) for w in ctx.weights]


def test_custom_score_by_dotted_path_on_a_torch_pruned_user_model():
    class User(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = linear_net()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(built_data(0), batch_size=32)

    module = User()
    prune.random_unstructured(module.net[0], "weight", amount=0.75)
    unpruning = UnPruning(score="tests.callbacks.test_unpruning.first_entries_score")
    quiet_trainer(max_steps=3, callbacks=[unpruning]).fit(module)
    kept = unpruning.masks()["net.0.weight_orig"]
    assert kept.flatten().tolist() == [True] * 16 + [False] * 48
    assert torch.equal(module.net[0].weight_mask.bool(), kept)
    assert bool((module.net[0].weight.flatten()[16:] == 0).all())


def test_taylor_warns_when_values_before_pruning_are_unknown():
    net = linear_net()
    apply_pruning(net, amount=0.5)  # zeros only, no callback remembers the values
    with pytest.warns(UserWarning, match="cannot come back"):
        quiet_trainer(max_steps=1, callbacks=[UnPruning()]).fit(FineTune(net), datamodule=built_datamodule())


# ---------------------------------------------------------------------------------- the replay rule
def test_replay_recovers_the_retain_only_topology_and_reports_the_noise_floor(models, tmp_path):
    """UnPruning(score="replay") on the built case: the sparse model (pruned with the forget set's help)
    is un-pruned by replaying the pipeline on D_r from its initialisation; the topology report has the
    noise floor of a second reference and the gap closed."""
    from tests.functional.built_case import linear_net

    full, reference, _ = models
    torch.save(linear_net().state_dict(), tmp_path / "init.pt")  # the pipeline's initialisation
    torch.save({f"model.{k}": v.float() for k, v in reference.items()}, tmp_path / "reference.pt")
    noise = {"0.weight": reference["0.weight"].clone()}
    noise["0.weight"][0, :2] = ~noise["0.weight"][0, :2]  # a reference' differing in two entries
    torch.save({f"model.{k}": v.float() for k, v in noise.items()}, tmp_path / "noise.pt")
    unpruning = UnPruning(
        score="replay",
        init=str(tmp_path / "init.pt"),
        replay_rounds=1,
        replay_epochs=12.0,
        replay_lr=0.5,
        scope="global",
        reference=str(tmp_path / "reference.pt"),
        noise_reference=str(tmp_path / "noise.pt"),
    )
    method = FineTune(copy.deepcopy(full), lr=0.01)
    quiet_trainer(max_steps=1, callbacks=[MagnitudePruning(amount=0.5), unpruning]).fit(method, datamodule=built_datamodule())
    report = topology_report(method.trainer.callbacks)
    assert report["iou_original"] < 0.7 and report["iou_unpruned"] > 0.9  # minibatch SGD on D_r: near the reference
    assert not bool(unpruning.masks()["0.weight"][:, 8:].any())  # no weight reading forget-only features survives
    assert report["sparsity"] == 0.5 and report["floor"] == pytest.approx(float(mask_iou(reference, noise)))
    assert report["gap_closed"] > 0.9 and unpruning.topology_time_s > 0


# ---------------------------------------------------------------------------------- resume and composition
def test_gradual_unpruning_resumes_exactly_from_a_mid_run_checkpoint(models, tmp_path):
    full = models[0]

    def run(ckpt=None, save=False):
        L.seed_everything(0)
        unpruning = UnPruning(mode="gradual", batches=2, update_every=3, turnover=0.3, stop_fraction=1.0)
        callbacks = [MagnitudePruning(amount=0.6), unpruning]
        if save:
            callbacks.append(ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1))
        method = FineTune(copy.deepcopy(full), lr=0.05)
        quiet_trainer(max_epochs=2, enable_checkpointing=save, callbacks=callbacks).fit(
            method, datamodule=built_datamodule(), ckpt_path=ckpt
        )
        return method, unpruning

    straight, cb = run(save=True)
    resumed, cb_resumed = run(ckpt=tmp_path / "epoch=0.ckpt")
    assert cb.updates == cb_resumed.updates == 5
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert all(torch.equal(cb.masks()[k], v) for k, v in cb_resumed.masks().items())
    assert all(torch.equal(cb.topology_before()[k], v) for k, v in cb_resumed.topology_before().items())


def test_stacks_with_saliency_mask_and_random_label(models):
    from lightning_unlearn.callbacks import SaliencyMask

    full = models[0]
    pruning, unpruning = MagnitudePruning(amount=0.5), UnPruning(mode="gradual", update_every=2, stop_fraction=1.0)
    saliency = SaliencyMask(threshold=0.5)
    method = RandomLabel(copy.deepcopy(full), lr=0.05)

    class Check(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            kept = unpruning.masks()["0.weight"]
            assert bool((pl_module.model[0].weight[~kept] == 0).all())

    quiet_trainer(max_epochs=1, callbacks=[saliency, pruning, unpruning, Check()]).fit(method, datamodule=built_datamodule())
    assert unpruning.updates >= 3
    assert torch.equal(pruning.masks()["0.weight"], unpruning.masks()["0.weight"])


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"score": "fisher"}, "Unknown `score`"),
        ({"score": "no.such.module.fn"}, "does not import"),
        ({"mode": "sometimes"}, "`mode` must be one of"),
        ({"scope": "model"}, "`scope` must be one of \\('global', 'layer'\\)"),
        ({"revive": "random"}, "`revive` must be one of"),
        ({"turnover": 0.0}, "`turnover` must be a fraction"),
        ({"stop_fraction": 1.5}, "`stop_fraction` must be a fraction"),
        ({"batches": 0}, "`batches` must be an integer >= 1"),
        ({"lr": 0.0}, "`lr` must be a finite number > 0"),
        ({"reference": 3}, "`reference` must be None or a file path"),
        ({"score": "replay"}, "give `init_seed`"),
        ({"score": "replay", "init_seed": 0, "mode": "gradual"}, "use mode='one_shot'"),
        ({"score": "replay", "init_seed": 0, "replay_epochs": 0.0}, "`replay_epochs` must be a finite number > 0"),
        ({"score": "replay", "init_seed": 0, "replay_rounds": 0}, "`replay_rounds` must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UnPruning(**kwargs)


def test_bad_setups_fail_before_any_weight_changes(models):
    full = models[0]
    cases = [
        ([UnPruning()], "found no pruned weight"),
        ([MagnitudePruning(amount=0.5, method="imp", rounds=2), UnPruning()], "keeps pruning during training"),
        ([MagnitudePruning(amount=0.5), UnPruning(reference="missing.ckpt")], "`reference`"),
        ([MagnitudePruning(amount=0.5), UnPruning(parameters="conv")], "matched no trainable parameter"),
    ]
    for callbacks, match in cases:
        method = FineTune(copy.deepcopy(full))
        with pytest.raises(ValueError, match=match):
            quiet_trainer(max_epochs=2, callbacks=callbacks).fit(method, datamodule=built_datamodule())
        assert torch.equal(method.model[0].weight, full[0].weight)
