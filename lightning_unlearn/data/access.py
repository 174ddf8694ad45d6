"""The one data seam: how methods and callbacks find the forget, retain and test data of a fit.

Every part that needs data of its own (a saliency pass on the forget set, a retain reference
gradient, scoring batches, the evaluation) asks here, in this order:

1. an :class:`~lightning_unlearn.data.UnlearningDataModule` given to the part itself (``override``);
2. the trainer's datamodule, when it is an :class:`~lightning_unlearn.data.UnlearningDataModule`;
3. a ``dataloader`` the user gave to the part's constructor;
4. for retained data only, the fit's own training loader (a user's module trains on retained
   data), read through Lightning's public API (``trainer.fit_loop.setup_data()`` and
   ``trainer.train_dataloader``).

Batches come out as the trainer's precision plugin feeds the module (:func:`convert_input`):
under ``precision="bf16-true"`` the inputs of a saliency pass or a retain gradient are bfloat16,
like the training batches, so the extra passes run on the converted network.

Errors name the part that asked and both ways to provide the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor
from torch.utils.data import RandomSampler

from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.data.samplers import SeededBatchSampler, cycle

__all__ = [
    "DEFAULT_KEYS",
    "batch_xy",
    "convert_input",
    "forget_batches",
    "require_unlearning_data",
    "resolve_keys",
    "retain_batches",
    "retain_stream",
    "unlearning_data",
]

_HOW = (
    "pass `datamodule=UnlearningDataModule(train, test, forget=ForgetSpec(...))` (or"
    " `UnlearningDataModule.from_datamodule(your_dm, forget=...)`) to trainer.fit"
)


#: Input/label key pairs tried, in order, on dict items and batches when none are declared.
DEFAULT_KEYS: tuple[tuple[str, str], ...] = (
    ("input", "label"),
    ("image", "label"),
    ("x", "y"),
    ("inputs", "labels"),
    ("images", "labels"),
    ("input", "target"),
    ("image", "target"),
    ("pixel_values", "labels"),
    ("data", "target"),
)


def resolve_keys(mapping: Any, keys: Optional[tuple[str, str]] = None, who: str = "the data") -> tuple[str, str]:
    """The ``(input, label)`` keys of a dict item or batch: ``keys`` when declared (checked to be
    present), else the first pair of :data:`DEFAULT_KEYS` that ``mapping`` holds.

    Raises:
        ValueError: a declared key is missing, or no default pair fits (the message lists the keys
            ``mapping`` has and how to declare them).
    """
    present = sorted(map(str, mapping))
    if keys is not None:
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise ValueError(f"{who} lacks the key(s) {missing} of keys={tuple(keys)!r}; it has {present}.")
        return keys[0], keys[1]
    for pair in DEFAULT_KEYS:
        if pair[0] in mapping and pair[1] in mapping:
            return pair
    raise ValueError(
        f"{who} yields dicts with keys {present}, none of the known (input, label) pairs {list(DEFAULT_KEYS)}:"
        " declare them, e.g. UnlearningDataModule(..., keys=('image', 'label')) or"
        " UnlearningDataModule.from_datamodule(dm, forget=..., input_key='image', target_key='label')."
    )


def batch_xy(batch: Any, keys: Optional[tuple[str, str]] = None, who: str = "the data") -> tuple[Any, Any]:
    """The ``(x, y)`` of one item or batch: a tuple/list gives its first two entries, a dict the
    values under ``keys`` (default: :func:`resolve_keys`'s first fitting pair of
    :data:`DEFAULT_KEYS`). The one place where the package unpacks a batch.

    Example::

        >>> batch_xy({"image": 1, "label": 2})
        (1, 2)

    Raises:
        ValueError: any other shape (naming ``who`` and the fix).
    """
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, dict):
        input_key, label_key = resolve_keys(batch, keys, who)
        return batch[input_key], batch[label_key]
    got = type(batch).__name__ if not isinstance(batch, (tuple, list)) else f"a {type(batch).__name__} of {len(batch)}"
    raise ValueError(
        f"{who} must yield (x, y) pairs or dicts of input and label, got {got}: return `x, y` (or a dict with"
        " declared input/label keys) from the dataset or collate_fn."
    )


def unlearning_data(
    trainer: Optional[L.Trainer], override: Optional[UnlearningDataModule] = None
) -> Optional[UnlearningDataModule]:
    """The :class:`UnlearningDataModule` of a fit: ``override`` when given, else the trainer's
    datamodule when it is one, else ``None``."""
    if override is not None:
        return override
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    return datamodule if isinstance(datamodule, UnlearningDataModule) else None


def _given(trainer: Optional[L.Trainer]) -> str:
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    return type(datamodule).__name__ if datamodule is not None else "no datamodule"


def require_unlearning_data(
    trainer: Optional[L.Trainer], who: str, override: Optional[UnlearningDataModule] = None, alternative: str = ""
) -> UnlearningDataModule:
    """:func:`unlearning_data`, or a ``ValueError`` naming ``who`` needs it and how to give it
    (``alternative``: a further way, e.g. ``"or pass `UnlearningEvaluation(datamodule=...)`"``)."""
    data = unlearning_data(trainer, override)
    if data is None:
        raise ValueError(
            f"{who} needs the forget/retain split, but the trainer was given {_given(trainer)}: {_HOW}"
            + (f", {alternative}" if alternative else "")
            + "."
        )
    return data


def convert_input(trainer: Optional[L.Trainer], data: Any) -> Any:
    """``data`` (a tensor, a batch or any collection) converted as the trainer's precision plugin
    converts training batches: floating tensors become bfloat16 / float16 under
    ``"bf16-true"`` / ``"16-true"`` (and float64 under ``"64-true"``); unchanged under full and
    mixed precision, and without a trainer. The one place where extra passes (saliency, retain
    gradients, scoring, evaluation) meet the fit's precision.

    Example::

        >>> import torch
        >>> trainer = L.Trainer(precision="bf16-true", accelerator="cpu", logger=False)
        >>> convert_input(trainer, (torch.zeros(2), torch.tensor([1, 2])))[0].dtype
        torch.bfloat16
    """
    if trainer is None:
        return data
    return trainer.precision_plugin.convert_input(data)


class _Converted:
    """An iterable of batches passed through :func:`convert_input` (the length of the loader kept)."""

    def __init__(self, loader: Iterable, trainer: Optional[L.Trainer]) -> None:
        self.loader, self.trainer = loader, trainer

    def __iter__(self) -> Iterator[Any]:
        return (convert_input(self.trainer, batch) for batch in self.loader)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


def forget_batches(
    trainer: Optional[L.Trainer], who: str, dataloader: Optional[Iterable] = None, train_transforms: bool = False
) -> Iterable:
    """Forget-set ``(x, y)`` batches: the :class:`UnlearningDataModule`'s ``forget_dataloader()``
    (dataset order, test-time transforms; with ``train_transforms`` the forget examples as
    training reads them, in batches of ``forget_batch_size``), else ``dataloader``; converted to
    the fit's precision (:func:`convert_input`).

    Raises:
        ValueError: neither exists (the message names ``who`` and the ``dataloader=`` fix).
    """
    data = unlearning_data(trainer)
    if data is not None and train_transforms:
        return _Converted(data.make_loader(data.split("forget"), data.forget_batch_size), trainer)
    if data is not None:
        return _Converted(data.forget_dataloader(), trainer)
    if dataloader is not None:
        return _Converted(dataloader, trainer)
    raise ValueError(
        f"{who} needs forget data: train with an UnlearningDataModule"
        f" (`trainer.fit(module, datamodule=UnlearningDataModule(...))`) or pass"
        f" `{who}(dataloader=<forget DataLoader>)`."
    )


def _xy(batch: Any, who: str, keys: Optional[tuple[str, str]] = None) -> tuple[Tensor, Tensor]:
    if isinstance(batch, dict) or (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        x, y = batch_xy(batch, keys, who)
        if isinstance(x, Tensor):
            return x, torch.as_tensor(y)
    raise ValueError(
        f"{who} needs retained (x, y) batches, got {type(batch).__name__}: fit with an UnlearningDataModule"
        " or a training loader of (x, y) pairs (or of dicts with input/label keys)."
    )


def retain_batches(
    trainer: L.Trainer,
    count: int,
    seed: int,
    device: torch.device,
    who: str = "Scoring",
    dataloader: Optional[Iterable] = None,
) -> list[tuple[Tensor, Tensor]]:
    """Up to ``count`` retained ``(x, y)`` batches on ``device`` (converted to the fit's precision,
    :func:`convert_input`), torch's global random state untouched.

    From an :class:`UnlearningDataModule`: a random subset of D_r (test-time transforms,
    evaluation batch size) drawn from a generator seeded by ``seed``. Else the first batches of
    ``dataloader``, else of the fit's training loader (a user's module trains on retained data).

    Raises:
        ValueError: no data, or batches that are not ``(x, y)`` pairs.
    """
    data = unlearning_data(trainer)
    with torch.random.fork_rng(devices=[]):
        if data is not None:
            retain = data.split("retain", eval_transforms=True)
            sampler = RandomSampler(retain, generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
            loader: Iterable = data.make_loader(retain, data.eval_batch_size, sampler=sampler, workers=False)
        elif dataloader is not None:
            loader = dataloader
        else:
            loader = _training_loader(trainer)
        out = []
        for batch in loader:
            x, y = _xy(convert_input(trainer, batch), who)
            out.append((x.to(device), y.to(device)))
            if len(out) == count:
                break
    if not out:
        raise ValueError(f"{who}: the retained data yields no batch; it needs at least one.")
    return out


def _training_loader(trainer: L.Trainer) -> Iterable:
    """The fit's training data: a fresh loader from the datamodule's or the module's
    ``train_dataloader()`` hook when there is one (the fit's own loader, and any generator it
    holds, is left untouched), else the loader given to ``trainer.fit`` itself."""
    for source in (getattr(trainer, "datamodule", None), trainer.lightning_module):
        if source is not None and is_overridden("train_dataloader", source):
            return source.train_dataloader()
    trainer.fit_loop.setup_data()
    loader = trainer.train_dataloader
    if loader is None:
        raise ValueError("The fit has no training loader to read retained data from: fit with an UnlearningDataModule.")
    return loader


def retain_stream(
    trainer: L.Trainer, who: str, seed: int, start: int = 0, dataloader: Optional[Iterable] = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """An endless stream of retained ``(x, y)`` batches (on the CPU, converted to the fit's precision
    by :func:`convert_input`), resumable after ``start`` draws.

    From an :class:`UnlearningDataModule`: D_r with training transforms, its batch size and
    workers, reshuffled per pass from ``seed`` (:class:`SeededBatchSampler`); under DDP the ranks
    draw disjoint batches of one shared stream. Else ``dataloader`` cycled (after ``start``
    batches).

    Raises:
        ValueError: neither an :class:`UnlearningDataModule` nor ``dataloader``.
    """
    data = unlearning_data(trainer)
    if data is not None:
        retain = data.split("retain")
        sampler = SeededBatchSampler(len(retain), data.batch_size, seed, start, trainer.world_size, trainer.global_rank)  # type: ignore[arg-type]
        batches: Iterable = data.make_loader(retain, batch_sampler=sampler)
    elif dataloader is not None:
        batches = cycle(dataloader, start)
    else:
        raise ValueError(
            f"{who} needs retained data, but the trainer has {_given(trainer)}: {_HOW}, or pass"
            f" `{who}(dataloader=<DataLoader of retained (x, y)>)`."
        )
    return (_xy(convert_input(trainer, batch), who) for batch in batches)
