"""`UnlearningDataModule`: splits a training set into forget and retain parts and serves both."""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from lightning_unlearn.data.batch_plan import ONE_PASS_PLANS, OnePassPlan, PlannedBatches
from lightning_unlearn.data.samplers import EpochShuffleSampler

from lightning_unlearn.data.spec import ForgetSpec, fingerprint
from lightning_unlearn.validation import check_int

SPLITS = ("forget", "retain")
#: ``epoch_split`` value: the split with more batches per pass defines the epoch.
LONGEST = "longest"


class UnlearningDataModule(L.LightningDataModule):
    """Serves a deletion request to any Lightning loop.

    The training set is split by ``forget`` into a forget set D_f and a retain set D_r.
    Training batches follow what the running LightningModule declares:

    * ``unlearning_inputs = ("forget", "retain")`` (any non-empty subset): each batch is a dict
      ``{"forget": (x, y), "retain": (x, y)}``. ``epoch_split`` names the split that defines an
      epoch (one pass over it, shuffled); the other splits are drawn by reshuffled passes of the
      same number of batches, so a short forget set is cycled, never truncated;
      ``epoch_split="longest"`` picks the split with more batches per pass. A module whose
      ``batch_plan`` is ``"sequential"`` or ``"shuffled"`` gets one pass over each example per
      epoch instead (:meth:`one_pass_dataloader`).
    * ``unlearning_inputs = ("train",)`` (``ImageClassifier``, training the original): plain
      ``(x, y)`` batches of the whole training set, D_f included.
    * nothing declared (a user's own LightningModule): plain ``(x, y)`` batches of D_r, so fine-tuning
      on retained data works unchanged.

    Evaluation loaders (:meth:`forget_dataloader`, :meth:`retain_dataloader`,
    :meth:`test_dataloader`) are unshuffled and use ``train_eval`` (the training examples with
    test-time transforms) when given.

    Args:
        train: the training dataset of the original model, yielding ``(x, y)``.
        test: held-out dataset, yielding ``(x, y)``.
        forget: the deletion request.
        batch_size: batch size of training and evaluation loaders.
        forget_batch_size: batch size of forget batches in training (default: ``batch_size``).
        eval_batch_size: batch size of evaluation loaders (default: ``batch_size``).
        num_workers: DataLoader workers.
        val: optional validation dataset (served by ``val_dataloader``).
        train_eval: the training set with test-time transforms, index-aligned with ``train``.
        shuffle_seed: seed of the training order. Each epoch's order depends only on this seed and
            the epoch number, so a run resumed from a checkpoint sees the same batches as an
            uninterrupted one.

    Raises:
        ValueError: for an invalid request (see :meth:`ForgetSpec.resolve`) or non-positive sizes.
    """

    def __init__(
        self,
        train: Optional[Dataset] = None,
        test: Optional[Dataset] = None,
        forget: Optional[ForgetSpec] = None,
        batch_size: int = 128,
        forget_batch_size: Optional[int] = None,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        val: Optional[Dataset] = None,
        train_eval: Optional[Dataset] = None,
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        if forget is None:
            raise ValueError("`forget` is required: pass e.g. forget=ForgetSpec(classes=[3]) or ForgetSpec(ratio=0.1).")
        if isinstance(forget, dict):
            forget = ForgetSpec(**forget)
        if not isinstance(forget, ForgetSpec):
            raise ValueError(f"`forget` must be a ForgetSpec (or a mapping of its fields), got {type(forget).__name__}.")
        batch_size = check_int(batch_size, "batch_size", minimum=1, hint="e.g. 128")
        for name, value in (("forget_batch_size", forget_batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None:
                check_int(value, name, minimum=1, hint=f"a positive integer, or None for batch_size ({batch_size})")
        self.forget = forget
        self.batch_size = batch_size
        self.forget_batch_size = int(forget_batch_size or batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = check_int(num_workers, "num_workers", minimum=0, hint="0 loads in the main process")
        self.shuffle_seed = check_int(shuffle_seed, "shuffle_seed")
        self.train_set, self.test_set, self.val_set, self.train_eval_set = train, test, val, train_eval
        self._forget_indices: Optional[Tensor] = None
        self._retain_indices: Optional[Tensor] = None
        self._targets: Optional[Tensor] = None
        if train is not None:
            self._split()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_datamodule(cls, datamodule: L.LightningDataModule, forget: ForgetSpec, **kwargs: Any) -> UnlearningDataModule:
        """Wraps an existing LightningDataModule: its train dataset is split, its test (or, if
        it has none, validation) dataset is the held-out set. Batch size defaults to the one of
        its training loader."""
        datamodule.prepare_data()
        datamodule.setup("fit")
        train_loader = datamodule.train_dataloader()
        test = None
        try:
            datamodule.setup("test")
            test = datamodule.test_dataloader().dataset
        except Exception:  # a datamodule without a test split
            test = None
        if test is None:
            test = datamodule.val_dataloader().dataset
        kwargs.setdefault("batch_size", train_loader.batch_size or 128)
        return cls(train=train_loader.dataset, test=test, forget=forget, **kwargs)

    def load_datasets(self) -> tuple[Dataset, Dataset, Optional[Dataset], Optional[Dataset]]:
        """Hook for ready datamodules that load data lazily: returns ``(train, test, val, train_eval)``."""
        raise ValueError(
            "UnlearningDataModule has no training data: pass `train=` and `test=` datasets, or use"
            " UnlearningDataModule.from_datamodule(...) or a ready datamodule (DigitsDataModule, FashionMNISTDataModule)."
        )

    def _ensure_loaded(self) -> None:
        if self.train_set is None:
            self.train_set, self.test_set, self.val_set, self.train_eval_set = self.load_datasets()
            self._split()

    def _split(self) -> None:
        if self.test_set is None:
            raise ValueError("`test` is required: MIA-efficacy and test accuracy need held-out data.")
        targets = dataset_targets(self.train_set)
        if self.train_eval_set is not None and len(self.train_eval_set) != len(self.train_set):
            raise ValueError("`train_eval` must hold the same examples as `train` (same length, same order).")
        forget = self.forget.resolve(targets)
        keep = torch.ones(len(targets), dtype=torch.bool)
        keep[forget] = False
        self._targets = targets
        self._forget_indices = forget
        self._retain_indices = keep.nonzero().flatten()

    def setup(self, stage: str) -> None:
        self._ensure_loaded()

    # ------------------------------------------------------------------ the split
    @property
    def forget_indices(self) -> Tensor:
        """Sorted positions of D_f in the training set."""
        self._ensure_loaded()
        return self._forget_indices

    @property
    def retain_indices(self) -> Tensor:
        """Sorted positions of D_r in the training set."""
        self._ensure_loaded()
        return self._retain_indices

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the sorted forget indices."""
        return fingerprint(self.forget_indices)

    def forget_summary(self) -> dict[str, Any]:
        """What a report, a log or a table says of the request: ``count`` (|D_f|),
        ``retain_count`` (|D_r|), ``fingerprint`` (SHA-256 of the sorted forget indices) and
        ``spec`` (:meth:`ForgetSpec.to_dict`). Never raw data or the indices themselves."""
        return {
            "count": len(self.forget_indices),
            "retain_count": len(self.retain_indices),
            "fingerprint": self.fingerprint,
            "spec": self.forget.to_dict(),
        }

    def training_batch_sizes(self) -> dict[str, int]:
        """Batch size of each split's training batches."""
        return {"forget": self.forget_batch_size, "retain": self.batch_size}

    def pass_batches(self, name: str) -> int:
        """Batches in one training pass over split ``name``."""
        return math.ceil(len(self.split(name)) / self.training_batch_sizes()[name])

    def longest_split(self, inputs: tuple[str, ...]) -> str:
        """The split of ``inputs`` with the most training batches per pass (ties: ``"retain"``):
        the epoch of ``epoch_split="longest"``, so every other split is passed at least once."""
        return max(inputs, key=lambda name: (self.pass_batches(name), name == "retain"))

    @property
    def num_classes(self) -> int:
        """Number of classes, from the largest label in the training set."""
        self._ensure_loaded()
        return int(self._targets.max()) + 1

    def split(self, name: str, eval_transforms: bool = False) -> Dataset:
        """The ``"forget"`` or ``"retain"`` part of the training set as a dataset."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}: use one of {SPLITS}.")
        self._ensure_loaded()
        base = self.train_eval_set if (eval_transforms and self.train_eval_set is not None) else self.train_set
        return Subset(base, (self._forget_indices if name == "forget" else self._retain_indices).tolist())

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: Dataset, batch_size: Optional[int], sampler: Optional[Sampler] = None) -> DataLoader:
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def _shuffled(self, dataset: Dataset, batch_size: int, stream: int, num_samples: Optional[int] = None) -> DataLoader:
        sampler = EpochShuffleSampler(len(dataset), num_samples, seed=self.shuffle_seed * 1000 + stream)
        return self._loader(dataset, batch_size, sampler)

    def train_dataloader(self) -> Any:
        module = self.trainer.lightning_module if self.trainer is not None else None
        inputs = tuple(getattr(module, "unlearning_inputs", ()) or ())
        if inputs == ("train",):
            return self._shuffled(self.train_set, self.batch_size, stream=0)
        if not inputs:
            return self._shuffled(self.split("retain"), self.batch_size, stream=2)
        unknown = set(inputs) - set(SPLITS)
        if unknown:
            raise ValueError(f"{type(module).__name__}.unlearning_inputs names unknown splits {sorted(unknown)}: use {SPLITS}.")
        plan = getattr(module, "batch_plan", None)
        if plan is not None:
            return self.one_pass_dataloader(plan)
        epoch_split = getattr(module, "epoch_split", None) or inputs[0]
        if epoch_split == LONGEST:
            epoch_split = self.longest_split(inputs)
        if epoch_split not in inputs:
            raise ValueError(f"`epoch_split` {epoch_split!r} must be one of the method's inputs {inputs} or {LONGEST!r}.")
        sizes = self.training_batch_sizes()
        steps = math.ceil(len(self.split(epoch_split)) / sizes[epoch_split])
        loaders = {}
        for name in inputs:
            stream = 1 + SPLITS.index(name)
            if name == epoch_split:
                loaders[name] = self._shuffled(self.split(name), sizes[name], stream)
            else:  # reshuffled passes (a short split is cycled) giving exactly `steps` full batches
                loaders[name] = self._shuffled(self.split(name), sizes[name], stream, num_samples=steps * sizes[name])
        return CombinedLoader(loaders, mode="min_size")

    def one_pass_dataloader(self, plan: str) -> DataLoader:
        """Training batches that pass every forget and retain example once per epoch
        (:class:`~lightning_unlearn.data.batch_plan.OnePassPlan`): ``"sequential"`` (forget-only
        batches of ``forget_batch_size``, then retain-only batches of ``batch_size``) or
        ``"shuffled"`` (mixed batches of ``batch_size`` over the union); each batch is
        ``{"forget": (x, y), "retain": (x, y)}`` with only the splits it holds."""
        if plan not in ONE_PASS_PLANS:
            raise ValueError(f"`batch_plan` must be one of {ONE_PASS_PLANS} (or None for paired batches), got {plan!r}.")
        forget, retain = self.split("forget"), self.split("retain")
        sampler = OnePassPlan(len(forget), len(retain), self.batch_size, self.forget_batch_size, plan,
                              seed=self.shuffle_seed * 1000 + 3)
        return self._loader(PlannedBatches(forget, retain), None, sampler)

    def forget_dataloader(self) -> DataLoader:
        """D_f in dataset order, test-time transforms."""
        return self._loader(self.split("forget", eval_transforms=True), self.eval_batch_size)

    def retain_dataloader(self) -> DataLoader:
        """D_r in dataset order, test-time transforms."""
        return self._loader(self.split("retain", eval_transforms=True), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        self._ensure_loaded()
        return self._loader(self.test_set, self.eval_batch_size)

    def val_dataloader(self) -> Any:
        self._ensure_loaded()
        return [] if self.val_set is None else self._loader(self.val_set, self.eval_batch_size)

    def evaluation_dataloaders(self) -> dict[str, DataLoader]:
        """The three evaluation loaders by name: ``forget``, ``retain``, ``test``."""
        return {"forget": self.forget_dataloader(), "retain": self.retain_dataloader(), "test": self.test_dataloader()}


def dataset_targets(dataset: Dataset) -> Tensor:
    """The labels of a dataset of ``(x, y)`` pairs as a ``(N,)`` long tensor.

    Uses ``dataset.targets`` (torchvision style), ``TensorDataset`` tensors and ``Subset`` indices
    when available, else reads the dataset once.
    """
    if isinstance(dataset, Subset):
        return dataset_targets(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(dataset, "tensors") and len(dataset.tensors) >= 2:
        targets = dataset.tensors[1]
    if targets is not None and len(targets) == len(dataset):
        return torch.as_tensor(targets).long().flatten().cpu()
    labels = [torch.as_tensor(y).reshape(-1) for _, y in DataLoader(dataset, batch_size=512)]
    return torch.cat(labels).long()
