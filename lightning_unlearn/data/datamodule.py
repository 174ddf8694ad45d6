"""`UnlearningDataModule`: splits a training set into forget and retain parts and serves both."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, Subset

from lightning_unlearn.data.batch_plan import ONE_PASS_PLANS, OnePassPlan, Plan, PlannedBatches
from lightning_unlearn.data.requests import as_requests, resolve_requests
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
        keys: for datasets whose items are dicts (e.g. Hugging Face datasets), the keys of the input
            and of the label, e.g. ``("image", "label")``; items are then served as ``(x, y)``.
            Default: the first pair of :data:`~lightning_unlearn.data.access.DEFAULT_KEYS` the items
            hold (``("input", "label")``, ``("image", "label")``, ``("x", "y")``, ...).
        requests: sequential deletion requests instead of ``forget``: a chain of
            :class:`ForgetSpec`. The datamodule then serves request ``step``: D_f = that request
            (resolved against what earlier requests left, see
            :func:`~lightning_unlearn.data.requests.resolve_requests`), D_r = everything not deleted
            by requests ``0..step``. :meth:`with_requests` / :meth:`at_step` give the datamodule of
            another step; :meth:`earlier_dataloaders` serves the earlier forget sets.
        step: the request of ``requests`` served (0-based).

    Every dataset must be map-style (indexable) and yield ``(x, y)`` pairs (or dicts holding
    ``keys``) with ``y`` a class index: the first item of each is checked at construction, and the
    labels of ``train`` must be class indices (one-hot or probability rows are refused with the fix).

    Raises:
        ValueError: for an invalid request (see :meth:`ForgetSpec.resolve`), non-positive sizes,
            a dataset whose items are not ``(x, y)`` pairs, or labels that are not class indices.
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
        keys: Optional[tuple[str, str]] = None,
        requests: Optional[Sequence[ForgetSpec]] = None,
        step: int = 0,
        _source: Optional[_Source] = None,
    ) -> None:
        super().__init__()
        self._source = _source
        self.requests: Optional[tuple[ForgetSpec, ...]] = None
        self.step = 0
        self._earlier_forget: list[Tensor] = []
        if requests is not None:
            if forget is not None:
                raise ValueError("Give `forget` (one request) or `requests` (a chain), not both.")
            self.requests = as_requests(requests)
            self.step = check_int(
                step, "step", minimum=0, maximum=len(self.requests) - 1, hint=f"the request served, 0..{len(self.requests) - 1}"
            )
            forget = self.requests[self.step]
        if forget is None:
            raise ValueError("`forget` is required: pass e.g. forget=ForgetSpec(classes=[3]) or ForgetSpec(ratio=0.1).")
        if isinstance(forget, dict):
            unknown = sorted(set(forget) - {"indices", "classes", "ratio", "seed"})
            if unknown:
                raise ValueError(f"`forget` has unknown field(s) {unknown}: ForgetSpec takes indices, classes, ratio and seed.")
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
        if keys is not None and (
            not isinstance(keys, (tuple, list))
            or len(keys) != 2
            or not all(isinstance(k, str) and k for k in keys)
            or keys[0] == keys[1]
        ):
            raise ValueError(
                f"`keys` must be None or two different key names (input, label), got {keys!r}: e.g. keys=('image', 'label')."
            )
        self.keys = None if keys is None else (keys[0], keys[1])
        for name, dataset in (("train", train), ("test", test), ("val", val), ("train_eval", train_eval)):
            if dataset is not None and not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
                raise ValueError(
                    f"`{name}` must be a map-style Dataset (with __getitem__ and __len__), got {type(dataset).__name__}:"
                    " the forget/retain split indexes it."
                )
        self.train_set, self.test_set, self.val_set, self.train_eval_set = train, test, val, train_eval
        self._forget_indices: Optional[Tensor] = None
        self._retain_indices: Optional[Tensor] = None
        self._targets: Optional[Tensor] = None
        if train is not None:
            self._split()
        if self._has_validation():  # known now: Lightning checks for a val_dataloader before `setup`
            self.val_dataloader = self._val_dataloader  # type: ignore[method-assign]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_datamodule(
        cls,
        datamodule: L.LightningDataModule,
        forget: ForgetSpec,
        input_key: Optional[str] = None,
        target_key: Optional[str] = None,
        **kwargs: Any,
    ) -> UnlearningDataModule:
        """Wraps an existing LightningDataModule, loaders and all.

        The training set of its ``train_dataloader()`` is split into D_f and D_r; the held-out set
        is the dataset of its ``test_dataloader()`` (or, when it defines none, of its
        ``val_dataloader()``). Every loader served is built like the user's own: same
        ``collate_fn``, ``num_workers``, ``pin_memory``, ``persistent_workers``, ``timeout``,
        ``worker_init_fn``, ``multiprocessing_context`` and ``prefetch_factor`` (evaluation loaders
        take the test loader's settings), batch size defaults to the training loader's.

        * A user's own LightningModule (declaring no ``unlearning_inputs``) gets the user's training
          batches, in the user's format, restricted to D_r: a custom ``sampler`` or
          ``batch_sampler`` is kept and its indices outside D_r are dropped, ``drop_last`` kept.
        * The package's methods get ``(x, y)`` batches: the user's ``collate_fn`` runs first, then a
          dict batch is unpacked through ``input_key``/``target_key`` (default: the first pair of
          :data:`~lightning_unlearn.data.access.DEFAULT_KEYS` the batch holds, e.g.
          ``("input", "label")``, ``("image", "label")``, ``("x", "y")``). Their forget/retain
          order is the package's seeded shuffle, so resumed runs are exact.
        * ``val_dataloader()`` is the user's own, unchanged, so the user's ``validation_step``,
          ``EarlyStopping(monitor=...)`` and ``ModelCheckpoint`` work as before.

        Errors raised by the user's hooks propagate unchanged.

        Args:
            datamodule: the user's LightningDataModule (``prepare_data`` and ``setup`` are called).
            forget: the deletion request.
            input_key: key of the input in dict batches (with ``target_key``).
            target_key: key of the class index in dict batches (with ``input_key``).
            **kwargs: further :class:`UnlearningDataModule` arguments (``batch_size``, ...).

        Raises:
            ValueError: only one of ``input_key``/``target_key``, a datamodule without test or
                validation data, or anything :class:`UnlearningDataModule` refuses.

        Example::

            >>> dm = UnlearningDataModule.from_datamodule(MyDataModule(), forget=ForgetSpec(classes=[3]))  # doctest: +SKIP
        """
        train, test, kwargs = _wrap(datamodule, input_key, target_key, kwargs)
        return cls(train=train, test=test, forget=forget, **kwargs)

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
        train, test = self.train_set, self.test_set
        if train is None:
            raise ValueError(f"{type(self).__name__} has no training set: pass `train=` (or return one from load_datasets()).")
        if self._source is None:
            train, test = checked_dataset(train, "train", self.keys), checked_dataset(test, "test", self.keys)
            self.train_set, self.test_set, self.val_set, self.train_eval_set = (
                train,
                test,
                *(
                    None if dataset is None else checked_dataset(dataset, name, self.keys)
                    for name, dataset in (("val", self.val_set), ("train_eval", self.train_eval_set))
                ),
            )
            targets = dataset_targets(train, "train")
        else:  # the user's datasets stay as they are: their collate_fn reads them
            for name, dataset, loader in (
                ("train", train, self._source.train),
                ("test", test, self._source.test),
            ):
                if _len(dataset) == 0:
                    raise ValueError(f"The {name} set of {type(self._source.datamodule).__name__} is empty.")
                _, label = self._source.xy_collate(loader)([dataset[0]])
                _class_indices(torch.as_tensor(label), name)
            targets = dataset_targets(train, "train", collate_fn=self._source.xy_collate(self._source.train))
        if self.train_eval_set is not None and _len(self.train_eval_set) != _len(train):
            raise ValueError("`train_eval` must hold the same examples as `train` (same length, same order).")
        if self.requests is None:
            forget, earlier = self.forget.resolve(targets), []
        else:
            *earlier, forget = resolve_requests(self.requests[: self.step + 1], targets)
        keep = torch.ones(len(targets), dtype=torch.bool)
        keep[forget] = False
        for deleted in earlier:
            keep[deleted] = False
        self._earlier_forget = earlier
        self._targets = targets
        self._forget_indices = forget
        self._retain_indices = keep.nonzero().flatten()

    def setup(self, stage: str) -> None:
        self._ensure_loaded()
        if self._has_validation():  # no val_dataloader at all otherwise (an empty one makes Lightning warn)
            self.val_dataloader = self._val_dataloader  # type: ignore[method-assign]

    def _train_set(self) -> Dataset:
        """The training set, loaded (:meth:`load_datasets`) if it is not yet."""
        if self.train_set is None:
            self._ensure_loaded()
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}.load_datasets() returned no training set.")
        return self.train_set

    def _split_state(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(forget indices, retain indices, targets)``, the split made (loading the data) if it is not yet."""
        self._ensure_loaded()
        if self._forget_indices is None or self._retain_indices is None or self._targets is None:
            raise RuntimeError(f"{type(self).__name__} has not split its training set: it has no training data.")
        return self._forget_indices, self._retain_indices, self._targets

    def _has_validation(self) -> bool:
        return self.val_set is not None or (self._source is not None and self._source.has_val)

    # ------------------------------------------------------------------ the split
    @property
    def forget_indices(self) -> Tensor:
        """Sorted positions of D_f in the training set."""
        return self._split_state()[0]

    @property
    def retain_indices(self) -> Tensor:
        """Sorted positions of D_r in the training set."""
        return self._split_state()[1]

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
        return math.ceil(_len(self.split(name)) / self.training_batch_sizes()[name])

    def longest_split(self, inputs: tuple[str, ...]) -> str:
        """The split of ``inputs`` with the most training batches per pass (ties: ``"retain"``):
        the epoch of ``epoch_split="longest"``, so every other split is passed at least once."""
        return max(inputs, key=lambda name: (self.pass_batches(name), name == "retain"))

    @property
    def num_classes(self) -> int:
        """Number of classes, from the largest label in the training set."""
        return int(self._split_state()[2].max()) + 1

    def split(self, name: str, eval_transforms: bool = False) -> Dataset:
        """The ``"forget"`` or ``"retain"`` part of the training set as a dataset."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}: use one of {SPLITS}.")
        forget, retain, _ = self._split_state()
        base = self.train_eval_set if (eval_transforms and self.train_eval_set is not None) else self._train_set()
        return Subset(base, (forget if name == "forget" else retain).tolist())

    # ------------------------------------------------------------------ loaders
    def make_loader(
        self,
        dataset: Dataset,
        batch_size: Optional[int] = None,
        sampler: Optional[Sampler] = None,
        batch_sampler: Optional[Sampler] = None,
        *,
        workers: bool = True,
        evaluation: bool = False,
        batched: bool = False,
    ) -> DataLoader:
        """A DataLoader of ``(x, y)`` batches over ``dataset`` (a split or a set of this datamodule)
        with this datamodule's loader settings: its ``num_workers`` (``workers=False``: none) and,
        for a wrapped datamodule (:meth:`from_datamodule`), the user's ``collate_fn``, pinning,
        worker settings (``evaluation=True``: those of the user's test loader), batches unpacked to
        ``(x, y)`` by the declared keys. ``batched``: ``sampler`` yields lists of indices and
        ``dataset`` returns whole, collated batches for them (``batch_size=None``)."""
        options: dict[str, Any] = {}
        if self._source is not None:
            user = self._source.test if evaluation else self._source.train
            options = self._source.settings(user, workers and self.num_workers > 0)
            options["collate_fn"] = self._source.xy_collate(user)
        num_workers = self.num_workers if workers else 0
        options.setdefault("persistent_workers", num_workers > 0)
        if batched:
            options.pop("collate_fn", None)  # the dataset collates its batches itself
            return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers, **options)
        if batch_sampler is not None:
            return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, **options)
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, sampler=sampler, num_workers=num_workers, **options)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Optional[Sampler] = None) -> DataLoader:
        return self.make_loader(dataset, batch_size, sampler, evaluation=sampler is None)

    def _shuffled(self, dataset: Dataset, batch_size: int, stream: int, num_samples: Optional[int] = None) -> DataLoader:
        sampler = EpochShuffleSampler(_len(dataset), num_samples, seed=self.shuffle_seed * 1000 + stream)
        return self.make_loader(dataset, batch_size, sampler)

    def _user_retain_loader(self) -> DataLoader:
        """The user's training loader restricted to D_r, in the user's batch format."""
        assert self._source is not None
        user, keep = self._source.train, set(self.retain_indices.tolist())
        options = self._source.settings(user, self.num_workers > 0)
        options["collate_fn"] = user.collate_fn
        options.setdefault("persistent_workers", self.num_workers > 0)
        batch_sampler = user.batch_sampler
        if batch_sampler is not None and not _default_batch_sampler(batch_sampler, user.sampler):
            return DataLoader(
                self._train_set(), batch_sampler=_KeptBatches(batch_sampler, keep), num_workers=self.num_workers, **options
            )
        if not isinstance(user.sampler, (RandomSampler, SequentialSampler)):
            return DataLoader(
                self._train_set(),
                batch_size=self.batch_size,
                sampler=_KeptIndices(user.sampler, keep),
                drop_last=user.drop_last,
                num_workers=self.num_workers,
                **options,
            )
        sampler = EpochShuffleSampler(len(self.retain_indices), seed=self.shuffle_seed * 1000 + 2)
        return DataLoader(
            self.split("retain"),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=user.drop_last,
            num_workers=self.num_workers,
            **options,
        )

    def train_dataloader(self) -> Any:
        module = self.trainer.lightning_module if self.trainer is not None else None
        inputs = tuple(getattr(module, "unlearning_inputs", ()) or ())
        if inputs == ("train",):
            return self._shuffled(self._train_set(), self.batch_size, stream=0)
        if not inputs:
            if self._source is not None:
                return self._user_retain_loader()
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
        steps = math.ceil(_len(self.split(epoch_split)) / sizes[epoch_split])
        loaders = {}
        for name in inputs:
            stream = 1 + SPLITS.index(name)
            if name == epoch_split:
                loaders[name] = self._shuffled(self.split(name), sizes[name], stream)
            else:  # reshuffled passes (a short split is cycled) giving exactly `steps` full batches
                loaders[name] = self._shuffled(self.split(name), sizes[name], stream, num_samples=steps * sizes[name])
        return CombinedLoader(loaders, mode="min_size")

    def one_pass_dataloader(self, plan: Plan) -> DataLoader:
        """Training batches that pass every forget and retain example once per epoch
        (:class:`~lightning_unlearn.data.batch_plan.OnePassPlan`): ``"sequential"`` (forget-only
        batches of ``forget_batch_size``, then retain-only batches of ``batch_size``) or
        ``"shuffled"`` (mixed batches of ``batch_size`` over the union); each batch is
        ``{"forget": (x, y), "retain": (x, y)}`` with only the splits it holds."""
        if plan not in ONE_PASS_PLANS:
            raise ValueError(f"`batch_plan` must be one of {ONE_PASS_PLANS} (or None for paired batches), got {plan!r}.")
        forget, retain = self.split("forget"), self.split("retain")
        sampler = OnePassPlan(
            _len(forget),
            _len(retain),
            self.batch_size,
            self.forget_batch_size,
            plan,
            seed=self.shuffle_seed * 1000 + 3,
        )
        collate = self._source.xy_collate(self._source.train) if self._source is not None else None
        return self.make_loader(PlannedBatches(forget, retain, collate), sampler=sampler, batched=True)

    def forget_dataloader(self) -> DataLoader:
        """D_f in dataset order, test-time transforms."""
        return self._loader(self.split("forget", eval_transforms=True), self.eval_batch_size)

    def retain_dataloader(self) -> DataLoader:
        """D_r in dataset order, test-time transforms."""
        return self._loader(self.split("retain", eval_transforms=True), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        self._ensure_loaded()
        if self.test_set is None:
            raise RuntimeError(f"{type(self).__name__} has no test set: pass `test=`.")
        return self._loader(self.test_set, self.eval_batch_size)

    def _val_dataloader(self) -> Any:
        """The validation loader (installed as ``val_dataloader`` by :meth:`setup` when there is
        validation data): the wrapped datamodule's own ``val_dataloader()``, unchanged, else
        ``val`` with the evaluation settings."""
        self._ensure_loaded()
        if self._source is not None and self._source.has_val:
            return self._source.datamodule.val_dataloader()
        if self.val_set is None:
            raise ValueError("This UnlearningDataModule has no validation data: pass `val=` to validate.")
        return self._loader(self.val_set, self.eval_batch_size)

    def evaluation_dataloaders(self) -> dict[str, DataLoader]:
        """The three evaluation loaders by name: ``forget``, ``retain``, ``test``."""
        return {"forget": self.forget_dataloader(), "retain": self.retain_dataloader(), "test": self.test_dataloader()}

    # ------------------------------------------------------------------ sequential requests
    def with_requests(self, requests: Sequence[ForgetSpec], step: int = 0) -> UnlearningDataModule:
        """This datamodule (same datasets, loaders and seeds) serving request ``step`` of the chain
        ``requests``; ``self`` is unchanged. Works on any subclass (the ready datamodules included):
        the copy shares the loaded datasets.

        Raises:
            ValueError: invalid requests or ``step`` (see :func:`resolve_requests`).
        """
        requests = as_requests(requests)
        step = check_int(step, "step", minimum=0, maximum=len(requests) - 1, hint=f"0..{len(requests) - 1}")
        clone = copy.copy(self)
        clone.trainer = None
        clone.requests, clone.step, clone.forget = requests, step, requests[step]
        clone._forget_indices = clone._retain_indices = clone._targets = None
        clone._earlier_forget = []
        if clone.train_set is not None:
            clone._split()
        return clone

    def at_step(self, step: int) -> UnlearningDataModule:
        """The datamodule of request ``step`` of this datamodule's chain."""
        if self.requests is None:
            raise ValueError("This datamodule serves one request: build it with `requests=[...]` or call with_requests().")
        return self.with_requests(self.requests, step)

    @property
    def num_requests(self) -> int:
        """Requests in the chain (1 for a single ``forget`` request)."""
        return 1 if self.requests is None else len(self.requests)

    @property
    def earlier_forget_indices(self) -> list[Tensor]:
        """Sorted positions of the forget sets of requests ``0..step-1`` (empty for step 0)."""
        self._ensure_loaded()
        return list(self._earlier_forget)

    def earlier_split(self, eval_transforms: bool = True) -> Dataset:
        """The union of the earlier forget sets (oldest request first, each in dataset order) as one
        dataset; empty at step 0."""
        self._ensure_loaded()
        base = self.train_eval_set if (eval_transforms and self.train_eval_set is not None) else self._train_set()
        indices = torch.cat(self._earlier_forget) if self._earlier_forget else torch.empty(0, dtype=torch.long)
        return Subset(base, indices.tolist())

    def earlier_dataloaders(self) -> list[DataLoader]:
        """One evaluation loader per earlier forget set (dataset order, test-time transforms),
        for relapse: is forgotten data still forgotten after later requests?"""
        self._ensure_loaded()
        base = self.train_eval_set if self.train_eval_set is not None else self._train_set()
        return [self._loader(Subset(base, indices.tolist()), self.eval_batch_size) for indices in self._earlier_forget]

    def chain_summary(self) -> dict[str, Any]:
        """What a report says of the chain: ``step``, ``steps``, the ``fingerprints`` of every forget
        set so far (earlier ones first, the current one last) and ``deleted_count``. No indices."""
        sets = [*self.earlier_forget_indices, self.forget_indices]
        return {
            "step": self.step,
            "steps": self.num_requests,
            "fingerprints": [fingerprint(indices) for indices in sets],
            "deleted_count": int(sum(len(indices) for indices in sets)),
        }


def dataset_targets(dataset: Dataset, name: str = "dataset", collate_fn: Optional[Any] = None) -> Tensor:
    """The labels of a dataset of ``(x, y)`` pairs as a ``(N,)`` long tensor.

    Uses ``dataset.targets`` (torchvision style), ``TensorDataset`` tensors and ``Subset`` indices
    when available, else reads the dataset once (through ``collate_fn`` when given, which must
    return ``(x, y)`` batches).

    Raises:
        ValueError: labels that are not class indices (one-hot or probability rows, fractional or
            negative values), naming ``name`` and the fix.
    """
    if isinstance(dataset, Subset):
        return dataset_targets(dataset.dataset, name, collate_fn)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(dataset, "tensors") and len(dataset.tensors) >= 2:
        targets = dataset.tensors[1]
    if targets is not None and len(targets) == len(dataset):  # type: ignore[arg-type]
        return _class_indices(torch.as_tensor(targets), name)
    options = {} if collate_fn is None else {"collate_fn": collate_fn}
    labels = [torch.as_tensor(batch[1]) for batch in DataLoader(dataset, batch_size=512, **options)]
    return _class_indices(torch.cat(labels), name)


def _class_indices(targets: Tensor, name: str) -> Tensor:
    """``targets`` as a ``(N,)`` long CPU tensor of class indices, or a ValueError with the fix."""
    if targets.ndim > 1 and targets[0].numel() > 1:
        raise ValueError(
            f"The labels of `{name}` have shape {tuple(targets.shape)}: they look one-hot (or like probabilities),"
            f" but class indices are needed: convert them with `y.argmax(dim=1)` (e.g."
            f" TensorDataset(x, y_onehot.argmax(1)))."
        )
    targets = targets.reshape(-1).cpu()
    if targets.dtype == torch.bool or targets.is_complex():
        raise ValueError(f"The labels of `{name}` are {targets.dtype}, not class indices: pass integer labels 0..C-1.")
    if targets.is_floating_point():
        if targets.numel() and not bool((targets == targets.round()).all()):
            raise ValueError(
                f"The labels of `{name}` are fractional floats, not class indices: pass integer labels 0..C-1"
                " (for soft labels, `y.argmax(dim=1)`)."
            )
    targets = targets.long()
    if targets.numel() and int(targets.min()) < 0:
        raise ValueError(f"The labels of `{name}` contain {int(targets.min())}: class indices must be 0..C-1.")
    return targets


class _KeyedItems(Dataset):
    """A dataset of dicts served as ``(item[input_key], item[label_key])`` pairs."""

    def __init__(self, dataset: Dataset, keys: tuple[str, str]) -> None:
        self.dataset, self.keys = dataset, keys

    def __len__(self) -> int:
        return _len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        item = self.dataset[index]
        return item[self.keys[0]], item[self.keys[1]]


def checked_dataset(dataset: Dataset, name: str, keys: Optional[tuple[str, str]] = None) -> Dataset:
    """``dataset`` after checking its first item is an ``(x, y)`` pair with a class-index label
    (with ``keys``: a dict holding both keys, served as ``(x, y)`` from then on).

    Raises:
        ValueError: an empty dataset, items of another shape, or a label that is not a class
            index, naming ``name`` and the fix.
    """
    if isinstance(dataset, _KeyedItems):
        return dataset
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"`{name}` is empty: pass a dataset with at least one example.")
    item = dataset[0]
    if isinstance(item, dict):
        from lightning_unlearn.data.access import resolve_keys  # access imports this module

        keys = resolve_keys(item, keys, f"`{name}`")
        dataset, item = _KeyedItems(dataset, keys), (item[keys[0]], item[keys[1]])
    elif keys is not None:
        raise ValueError(f"`keys`={keys!r} was given but `{name}` yields {type(item).__name__}, not dicts: drop `keys`.")
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        got = type(item).__name__ if not isinstance(item, (tuple, list)) else f"a {type(item).__name__} of {len(item)}"
        raise ValueError(
            f"`{name}` must yield (x, y) pairs (input, class index), got {got}: wrap the data, e.g."
            " TensorDataset(x, y), or return `x, y` from __getitem__."
        )
    label = torch.as_tensor(item[1]) if not isinstance(item[1], (str, bytes)) else None
    # A class index; or, for sequence models, integer class indices per position (next tokens), the
    # layout F.cross_entropy takes with (batch, classes, positions) logits. One-hot rows are then
    # refused by dataset_targets, which reads the request's (N,) labels.
    sequence = label is not None and label.ndim >= 1 and label.numel() > 1 and not label.is_floating_point()
    if (
        label is None
        or label.dtype == torch.bool
        or label.is_complex()
        or (label.numel() != 1 and not sequence)
        or (label.is_floating_point() and float(label) != round(float(label)))
    ):
        shown = tuple(label.shape) if label is not None and label.numel() != 1 else repr(item[1])[:40]
        raise ValueError(
            f"`{name}` yields labels like {shown}, not class indices: each item must be (x, y) with y an integer"
            " class 0..C-1 (one-hot labels: `y.argmax()`)."
        )
    return dataset


class _XYCollate:
    """The user's ``collate_fn`` followed by :func:`~lightning_unlearn.data.access.batch_xy`
    (picklable, for worker processes)."""

    def __init__(self, collate_fn: Any, keys: Optional[tuple[str, str]], who: str) -> None:
        self.collate_fn, self.keys, self.who = collate_fn, keys, who

    def __call__(self, items: list[Any]) -> tuple[Any, Any]:
        from lightning_unlearn.data.access import batch_xy  # access imports this module

        x, y = batch_xy(self.collate_fn(items), self.keys, self.who)
        return x, y


class _Source:
    """The LightningDataModule wrapped by :meth:`UnlearningDataModule.from_datamodule` and the
    settings of its loaders."""

    OPTIONS = ("pin_memory", "timeout", "worker_init_fn", "multiprocessing_context", "pin_memory_device")
    WORKER_OPTIONS = ("persistent_workers", "prefetch_factor")

    def __init__(
        self,
        datamodule: L.LightningDataModule,
        train: DataLoader,
        test: DataLoader,
        keys: Optional[tuple[str, str]],
        has_val: bool,
    ) -> None:
        self.datamodule, self.train, self.test, self.keys, self.has_val = datamodule, train, test, keys, has_val

    def settings(self, loader: DataLoader, workers: bool) -> dict[str, Any]:
        options = {name: getattr(loader, name) for name in self.OPTIONS if hasattr(loader, name)}
        if workers and loader.num_workers > 0:
            options.update({name: getattr(loader, name) for name in self.WORKER_OPTIONS})
        return options

    def xy_collate(self, loader: DataLoader) -> _XYCollate:
        return _XYCollate(loader.collate_fn, self.keys, f"The loaders of {type(self.datamodule).__name__}")


def _len(dataset: Dataset) -> int:
    """The length of a map-style dataset (``Dataset`` declares no ``__len__``; the datasets here have one)."""
    return len(dataset)  # type: ignore[arg-type]


def _default_batch_sampler(batch_sampler: Iterable[Any], sampler: Iterable[Any]) -> bool:
    """Whether ``batch_sampler`` is the one DataLoader builds from ``batch_size`` and ``sampler``."""
    return type(batch_sampler) is BatchSampler and getattr(batch_sampler, "sampler", None) is sampler


class _KeptIndices(Sampler[int]):
    """The user's sampler with the indices outside ``keep`` dropped (no ``__len__``: how many remain
    is known only by drawing)."""

    def __init__(self, sampler: Iterable[Any], keep: set[int]) -> None:
        self.sampler, self.keep = sampler, keep

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return (int(i) for i in self.sampler if int(i) in self.keep)


class _KeptBatches(Sampler[list[int]]):
    """The user's batch sampler with the indices outside ``keep`` dropped (empty batches skipped)."""

    def __init__(self, batch_sampler: Iterable[list[Any]], keep: set[int]) -> None:
        self.batch_sampler, self.keep = batch_sampler, keep

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            kept = [int(i) for i in batch if int(i) in self.keep]
            if kept:
                yield kept


def _wrap(
    datamodule: L.LightningDataModule, input_key: Optional[str], target_key: Optional[str], kwargs: dict[str, Any]
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """The train and held-out datasets of a user's datamodule and the keyword arguments of the
    :class:`UnlearningDataModule` wrapping its loaders (see :meth:`UnlearningDataModule.from_datamodule`)."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if not isinstance(datamodule, L.LightningDataModule):
        raise ValueError(f"`datamodule` must be a LightningDataModule, got {type(datamodule).__name__}.")
    if (input_key is None) != (target_key is None):
        raise ValueError(
            f"Give both `input_key` and `target_key` (got input_key={input_key!r}, target_key={target_key!r}),"
            " or neither to use the defaults, e.g. input_key='image', target_key='label'."
        )
    keys = None if input_key is None else (str(input_key), str(target_key))
    if kwargs.get("keys") is not None:
        raise ValueError("from_datamodule takes `input_key`/`target_key`, not `keys`.")
    datamodule.prepare_data()
    datamodule.setup("fit")
    train_loader = datamodule.train_dataloader()
    if not isinstance(train_loader, DataLoader):
        raise ValueError(
            f"{type(datamodule).__name__}.train_dataloader() must return one DataLoader to be wrapped,"
            f" got {type(train_loader).__name__}."
        )
    has_val = is_overridden("val_dataloader", datamodule)
    if is_overridden("test_dataloader", datamodule):
        datamodule.setup("test")
        test_loader = datamodule.test_dataloader()
    elif has_val:
        test_loader = datamodule.val_dataloader()
    else:
        raise ValueError(
            f"{type(datamodule).__name__} defines neither test_dataloader() nor val_dataloader(): the evaluation"
            " needs held-out data (test accuracy, MIA-efficacy)."
        )
    if not isinstance(test_loader, DataLoader):
        raise ValueError(
            f"The held-out loader of {type(datamodule).__name__} must be one DataLoader, got {type(test_loader).__name__}."
        )
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k not in ("batch_size", "num_workers")}
    kwargs.setdefault("batch_size", train_loader.batch_size or getattr(train_loader.batch_sampler, "batch_size", None) or 128)
    kwargs.setdefault("num_workers", train_loader.num_workers)
    kwargs.setdefault("eval_batch_size", test_loader.batch_size or None)
    kwargs["_source"] = _Source(datamodule, train_loader, test_loader, keys, has_val)
    return train_loader.dataset, test_loader.dataset, kwargs


class WrappedDataModule(UnlearningDataModule):
    """A user's LightningDataModule wrapped as an :class:`UnlearningDataModule` (exactly
    :meth:`UnlearningDataModule.from_datamodule`), as one class for configs and the CLI.

    Example (the command line does this for ``--data=my_pkg.MyDataModule --data.forget.classes=[3]``)::

        data:
          class_path: lightning_unlearn.data.WrappedDataModule
          init_args:
            datamodule:
              class_path: my_pkg.MyDataModule
            forget: {classes: [3]}

    Args:
        datamodule: the user's LightningDataModule.
        forget: the deletion request.
        input_key: key of the input in dict batches (with ``target_key``; default: the known pairs).
        target_key: key of the class index in dict batches.
        batch_size: training batch size (default: the user's training loader's).
        eval_batch_size: evaluation batch size (default: the user's test loader's).
        num_workers: loader workers (default: the user's training loader's).
        shuffle_seed: seed of the package's training order (see :class:`UnlearningDataModule`).
    """

    def __init__(
        self,
        datamodule: L.LightningDataModule,
        forget: ForgetSpec,
        input_key: Optional[str] = None,
        target_key: Optional[str] = None,
        batch_size: Optional[int] = None,
        eval_batch_size: Optional[int] = None,
        num_workers: Optional[int] = None,
        shuffle_seed: int = 0,
    ) -> None:
        train, test, kwargs = _wrap(
            datamodule,
            input_key,
            target_key,
            {
                "batch_size": batch_size,
                "eval_batch_size": eval_batch_size,
                "num_workers": num_workers,
                "shuffle_seed": shuffle_seed,
            },
        )
        if kwargs.get("eval_batch_size") is None:
            kwargs.pop("eval_batch_size")
        super().__init__(train=train, test=test, forget=forget, **kwargs)
