import math

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from lightning_unlearn.data import DigitsDataModule, FashionMNISTDataModule, ForgetSpec, UnlearningDataModule, dataset_targets
from tests.conftest import synthetic_dataset


def make_dm(**kwargs):
    return UnlearningDataModule(synthetic_dataset(100), synthetic_dataset(40, seed=1), **kwargs)


def test_split_is_disjoint_and_covering():
    dm = make_dm(forget=ForgetSpec(ratio=0.2, seed=3))
    f, r = set(dm.forget_indices.tolist()), set(dm.retain_indices.tolist())
    assert not f & r and f | r == set(range(100)) and len(f) == 20


def test_class_spec_forgets_exactly_that_class():
    dm = make_dm(forget=ForgetSpec(classes=[1]))
    targets = dataset_targets(dm.train_set)
    assert (targets[dm.forget_indices] == 1).all() and (targets[dm.retain_indices] != 1).all()
    assert dm.num_classes == 4


def test_eval_loaders_hold_the_split_in_order():
    dm = make_dm(forget=ForgetSpec(indices=[3, 1, 50]), batch_size=8)
    xs = torch.cat([x for x, _ in dm.forget_dataloader()])
    assert torch.equal(xs, dm.train_set.tensors[0][[1, 3, 50]])
    assert sum(len(y) for _, y in dm.retain_dataloader()) == 97
    assert sum(len(y) for _, y in dm.test_dataloader()) == 40


class _Declares(L.LightningModule):
    def __init__(self, inputs, epoch_split=None):
        super().__init__()
        self.unlearning_inputs, self.epoch_split = inputs, epoch_split


def _train_loader(dm, module):
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    dm.trainer = trainer
    trainer._data_connector.attach_datamodule(module, dm)
    return dm.train_dataloader()


def test_training_batches_follow_the_method_declaration():
    dm = make_dm(forget=ForgetSpec(ratio=0.2), batch_size=16, forget_batch_size=8)
    # both splits, epoch over forget: 20 / 8 -> 3 steps, retain drawn for the same 3 steps
    loader = _train_loader(dm, _Declares(("forget", "retain"), "forget"))
    assert isinstance(loader, CombinedLoader)
    batches = [b for b, *_ in loader]
    assert len(batches) == math.ceil(20 / 8) and all(set(b) == {"forget", "retain"} for b in batches)
    forget_ids = set(dm.forget_indices.tolist())
    x_train = dm.train_set.tensors[0]
    for b in batches:
        for x in b["forget"][0]:
            assert int(((x_train - x).abs().sum(1) == 0).nonzero()[0]) in forget_ids
        for x in b["retain"][0]:
            assert int(((x_train - x).abs().sum(1) == 0).nonzero()[0]) not in forget_ids
    # epoch over retain: 80 / 16 = 5 steps; the 20 forget examples are cycled, 8 per step
    batches = [b for b, *_ in _train_loader(dm, _Declares(("forget", "retain"), "retain"))]
    assert len(batches) == 5 and all(len(b["forget"][1]) == 8 for b in batches)


def test_plain_retain_batches_for_a_module_that_declares_nothing():
    dm = make_dm(forget=ForgetSpec(classes=[0]), batch_size=10)
    loader = _train_loader(dm, _Declares(()))
    assert isinstance(loader, DataLoader)
    ys = torch.cat([y for _, y in loader])
    assert len(ys) == 75 and (ys != 0).all()
    full = torch.cat([y for _, y in _train_loader(dm, _Declares(("train",)))])
    assert len(full) == 100


def test_order_depends_on_epoch_only():
    dm = make_dm(forget=ForgetSpec(ratio=0.2), batch_size=16)
    sampler = _train_loader(dm, _Declares(())).sampler
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(0)
    list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == first and sorted(first) == list(range(80))


def test_from_datamodule_wraps_a_user_datamodule():
    class UserDM(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(synthetic_dataset(60), batch_size=12)

        def test_dataloader(self):
            return DataLoader(synthetic_dataset(20, seed=2), batch_size=12)

    dm = UnlearningDataModule.from_datamodule(UserDM(), forget=ForgetSpec(classes=[2]))
    assert dm.batch_size == 12 and len(dm.forget_indices) == 15 and len(dm.test_set) == 20


def test_missing_forget_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="`forget` is required"):
        make_dm()
    with pytest.raises(ValueError, match="batch_size"):
        make_dm(forget=ForgetSpec(classes=[1]), batch_size=0)


def test_digits_is_embedded_and_stratified():
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]))
    assert len(dm.train_set) == 1437 and len(dm.test_set) == 360
    assert dm.train_set.tensors[0].shape[1:] == (1, 8, 8)
    assert dm.train_set.tensors[0].max() <= 1.0
    assert len(dm.forget_indices) == int((dataset_targets(dm.train_set) == 3).sum())


def test_fashion_mnist_reads_local_idx_files(tmp_path):
    import gzip

    def write(name, magic, dims, data):
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + bytes(data))

    images = [i % 256 for i in range(6 * 784)]
    for prefix, n in (("train", 6), ("t10k", 3)):
        write(f"{prefix}-images-idx3-ubyte.gz", 2051, (n, 28, 28), images[: n * 784])
        write(f"{prefix}-labels-idx1-ubyte.gz", 2049, (n,), [i % 3 for i in range(n)])
    dm = FashionMNISTDataModule(forget=ForgetSpec(classes=[0]), root=str(tmp_path))
    dm.setup("fit")
    assert len(dm.train_set) == 6 and len(dm.test_set) == 3 and dm.num_classes == 3
    x, _y = dm.train_set[0]
    assert x.shape == (1, 28, 28) and torch.isclose(x[0, 0, 1], torch.tensor((1 / 255 - 0.2860) / 0.3530))


def test_fashion_mnist_missing_gives_the_fix(tmp_path, monkeypatch):
    import lightning_unlearn.data.fashion_mnist as fm

    monkeypatch.setattr(fm, "DEBIAN_PATH", str(tmp_path / "none"))
    monkeypatch.delenv("FASHION_MNIST_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        _ = FashionMNISTDataModule(forget=ForgetSpec(classes=[0]), root=str(tmp_path)).forget_indices
