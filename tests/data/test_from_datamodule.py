"""`UnlearningDataModule.from_datamodule` wraps the user's loaders: collate, samplers, workers,
validation loader and errors all survive."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_unlearn.callbacks import SaliencyMask, UnlearningEvaluation
from lightning_unlearn.data import ForgetSpec, UnlearningDataModule
from lightning_unlearn.data.access import DEFAULT_KEYS, batch_xy, resolve_keys
from lightning_unlearn.methods import FineTune, RandomLabel
from tests.callbacks.user_module import Tiny
from tests.conftest import quiet_trainer, synthetic_dataset


def dict_collate(items):
    """A user's collate that returns dicts (and records that it ran)."""
    dict_collate.calls += 1
    return {"input": torch.stack([x for x, _ in items]), "label": torch.stack([y for _, y in items])}


dict_collate.calls = 0


class Reversed(Sampler[int]):
    """A custom sampler: the dataset backwards."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self) -> int:
        return self.n


class UserDM(L.LightningDataModule):
    """A user's datamodule: dict batches by its own collate, a custom sampler, pinned memory."""

    def __init__(self, sampler: bool = True, val: bool = True, collate=dict_collate) -> None:
        super().__init__()
        self.sampler, self.val, self.collate = sampler, val, collate

    def setup(self, stage: str) -> None:
        self.train_set, self.test_set = synthetic_dataset(64), synthetic_dataset(32, seed=2)

    def train_dataloader(self):
        sampler = Reversed(len(self.train_set)) if self.sampler else None
        return DataLoader(self.train_set, batch_size=8, sampler=sampler, collate_fn=self.collate, pin_memory=True)

    def val_dataloader(self):
        return DataLoader(self.test_set, batch_size=16, collate_fn=self.collate)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=16, collate_fn=self.collate)


class UserClassifier(L.LightningModule):
    """A user's module reading dict batches, validating with `val_acc`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = Tiny()
        self.seen: list[torch.Tensor] = []
        self.validated = 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, dict)  # the user's own format reaches the user's module
        self.seen.append(batch["label"].clone())
        return nn.functional.cross_entropy(self(batch["input"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        self.validated += 1
        acc = (self(batch["input"]).argmax(-1) == batch["label"]).float().mean()
        self.log("val_acc", acc)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_batch_xy_unpacks_pairs_and_dicts_by_default_keys():
    assert batch_xy((1, 2, 3)) == (1, 2)
    for input_key, label_key in DEFAULT_KEYS[:3]:
        assert batch_xy({input_key: "x", label_key: "y", "extra": 0}) == ("x", "y")
    assert batch_xy({"img": 1, "cls": 2}, keys=("img", "cls")) == (1, 2)
    with pytest.raises(ValueError, match="keys"):
        resolve_keys({"img": 1, "cls": 2})
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['cls'\]"):
        batch_xy({"img": 1}, keys=("img", "cls"))


def test_loaders_keep_the_users_settings_and_serve_xy_to_methods():
    dm = UnlearningDataModule.from_datamodule(UserDM(), forget=ForgetSpec(classes=[1]))
    assert dm.batch_size == 8 and len(dm.forget_indices) == 16 and dm.eval_batch_size == 16
    dm.trainer = None
    loaders = [dm.forget_dataloader(), dm.retain_dataloader(), dm.test_dataloader(), dm.train_dataloader()]
    assert [loader.pin_memory for loader in loaders] == [False, False, False, True]  # test vs train settings
    assert dm.make_loader(dm.split("retain"), 4).pin_memory
    for loader in loaders[:3]:
        assert loader.collate_fn.collate_fn is dict_collate
        x, y = next(iter(loader))
        assert x.shape[1:] == (6,) and y.dtype == torch.long
    before = dict_collate.calls
    x, y = next(iter(dm.forget_dataloader()))
    assert dict_collate.calls == before + 1 and bool((y == 1).all())


def test_users_module_gets_its_own_batches_sampler_and_validation_with_early_stopping():
    dm = UnlearningDataModule.from_datamodule(UserDM(), forget=ForgetSpec(classes=[1]))
    module = UserClassifier()
    stop = EarlyStopping(monitor="val_acc", mode="max", patience=1)
    trainer = quiet_trainer(max_epochs=4, callbacks=[stop], num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert module.validated > 0 and "val_acc" in trainer.callback_metrics
    first_epoch = torch.cat(module.seen[:6])
    # the custom sampler's order (dataset backwards), restricted to D_r (class 1 dropped)
    expected = torch.tensor([i % 4 for i in range(63, -1, -1) if i % 4 != 1])
    assert torch.equal(first_epoch, expected)


def test_custom_batch_sampler_is_kept_and_restricted_to_retain():
    class Pairs(Sampler[list[int]]):
        def __iter__(self):
            return iter([[i, i + 1] for i in range(0, 64, 2)])

        def __len__(self):
            return 32

    class DM(UserDM):
        def train_dataloader(self):
            return DataLoader(self.train_set, batch_sampler=Pairs(), collate_fn=dict_collate)

    dm = UnlearningDataModule.from_datamodule(DM(), forget=ForgetSpec(classes=[0]))
    dm.trainer = None
    batches = list(dm.train_dataloader())
    assert all(len(b["label"]) in (1, 2) for b in batches) and not any(bool((b["label"] == 0).any()) for b in batches)


def test_methods_and_callbacks_run_on_a_users_dict_datamodule():
    dm = UnlearningDataModule.from_datamodule(UserDM(), forget=ForgetSpec(classes=[1]))
    method = RandomLabel(Tiny(), lr=0.01)
    evaluation = UnlearningEvaluation()
    quiet_trainer(max_epochs=1, callbacks=[SaliencyMask(threshold=0.5), evaluation]).fit(method, datamodule=dm)
    assert set(evaluation.results["after"]) >= {"forget_acc", "retain_acc", "test_acc"}
    # a method validates on the user's dict batches too
    quiet_trainer(max_epochs=1, limit_train_batches=2).fit(FineTune(Tiny()), datamodule=dm)


def test_declared_keys_and_their_errors():
    def image_collate(items):
        return {"pixels": torch.stack([x for x, _ in items]), "cls": torch.stack([y for _, y in items])}

    with pytest.raises(ValueError, match="none of the known"):
        UnlearningDataModule.from_datamodule(UserDM(collate=image_collate), forget=ForgetSpec(classes=[1]))
    dm = UnlearningDataModule.from_datamodule(
        UserDM(collate=image_collate), forget=ForgetSpec(classes=[1]), input_key="pixels", target_key="cls"
    )
    x, y = next(iter(dm.forget_dataloader()))
    assert x.shape == (16, 6) and bool((y == 1).all())
    with pytest.raises(ValueError, match="both `input_key` and `target_key`"):
        UnlearningDataModule.from_datamodule(UserDM(), forget=ForgetSpec(classes=[1]), input_key="input")


def test_errors_in_the_users_loaders_propagate():
    class Broken(UserDM):
        def test_dataloader(self):
            raise RuntimeError("bug in the user's test_dataloader")

    with pytest.raises(RuntimeError, match="bug in the user's test_dataloader"):
        UnlearningDataModule.from_datamodule(Broken(), forget=ForgetSpec(classes=[1]))

    class BadItems(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            raise KeyError(f"user bug at {i}")

    class BadDM(UserDM):
        def train_dataloader(self):
            return DataLoader(BadItems(), batch_size=4)

    with pytest.raises(KeyError, match="user bug"):
        UnlearningDataModule.from_datamodule(BadDM(), forget=ForgetSpec(classes=[1]))


def test_a_plain_fit_has_no_empty_validation_warning():
    train = synthetic_dataset(32)
    dm = UnlearningDataModule(train, synthetic_dataset(16, seed=1), forget=ForgetSpec(classes=[1]), batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(max_epochs=1).fit(FineTune(Tiny()), datamodule=dm)
    noise = [str(w.message) for w in caught if "Total length" in str(w.message) or "val_dataloader" in str(w.message)]
    assert not noise, noise
    with_val = UnlearningDataModule(train, train, forget=ForgetSpec(classes=[1]), batch_size=8, val=train)
    trainer = quiet_trainer(max_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(FineTune(Tiny()), datamodule=with_val)
    assert "val/acc" in trainer.callback_metrics
    assert not [str(w.message) for w in caught if "val_dataloader" in str(w.message)]
