"""Evaluating a classifier on the forget, retain and test sets: the numbers every report shows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_unlearn.metrics.accuracy import ClassificationAccuracy
from lightning_unlearn.metrics.attacks import MembershipAudit
from lightning_unlearn.metrics.functional.attacks import DEFAULT_FPRS, membership_audit
from lightning_unlearn.metrics.keys import fpr_tag
from lightning_unlearn.metrics.mia import MIAEfficacy

EVAL_SPLITS: tuple[Literal["forget", "retain", "test"], ...] = ("forget", "retain", "test")


@torch.no_grad()
def evaluate_loaders(
    model: nn.Module,
    loaders: Mapping[str, Iterable],
    device: Union[str, torch.device, None] = None,
    mia_backend: Literal["torch", "sklearn"] = "torch",
    *,
    distributed: bool = False,
    convert_input: Optional[Callable[[Any], Any]] = None,
    name: str = "model",
    strict: bool = True,
    progress: Optional[str] = None,
) -> dict[str, Optional[float]]:
    """Measures ``model`` on ``{"forget": ..., "retain": ..., "test": ...}`` loaders of ``(x, y)``.

    One forward pass per example in eval mode (BatchNorm running statistics, no dropout) feeds
    both the accuracies and the MIA-efficacy features; the model's train/eval mode is restored.
    The loaders must be deterministic (unshuffled), as the evaluation loaders of an
    :class:`~lightning_unlearn.data.UnlearningDataModule` are.

    Under DDP (``distributed=True``, every rank calls this with the same loaders) rank ``r``
    forwards batches ``r, r + W, r + 2W, ...`` of each loader — the very batches one process
    forms, so the logits are the same — and the metrics gather every rank's samples by position
    before computing (:class:`~lightning_unlearn.metrics.MIAEfficacy` with ``index``). Every rank
    returns the numbers one process would compute on the same weights, exactly.

    Args:
        model: the classifier (its forward returns ``(batch, classes)`` logits).
        loaders: one loader per split.
        device: where to run (default: the device of the model's first parameter).
        mia_backend: ``"torch"`` or ``"sklearn"`` (see :class:`~lightning_unlearn.metrics.MIAEfficacy`).
        distributed: share the batches over the ranks of the default process group and gather
            the metrics (every rank must call); ``False``: this process evaluates everything alone.
        convert_input: applied to every input batch ``x`` before the forward, e.g. a Lightning
            precision plugin's ``convert_input`` (``bf16-true`` feeds the model bfloat16 inputs);
            default: floating inputs are cast to the dtype of the model's weights.
        name: how errors call the model (``"model"``, ``"reference"``...).
        strict: non-finite logits raise (``True``); ``False``: the metrics they would enter are
            ``None`` (a diverged model's report still shows what could be measured).
        progress: a description to show a progress bar over the batches under (tqdm on stderr,
            shown only when stderr is a terminal); ``None``: no bar.

    Returns:
        ``forget_acc``, ``retain_acc``, ``test_acc``, ``unlearning_accuracy`` (1 - forget_acc) and
        ``mia_efficacy`` (OPTML definition, see :class:`~lightning_unlearn.metrics.MIAEfficacy`),
        all fractions in [0, 1] (``None`` only when ``strict=False`` and the logits were not finite).

    Raises:
        ValueError: a split missing from ``loaders``, a batch that is not an ``(x, y)`` pair, or
            (``strict``) non-finite logits, naming ``name`` and the split.
    """
    return evaluate_pass(
        model,
        loaders,
        device,
        mia_backend,
        distributed=distributed,
        convert_input=convert_input,
        name=name,
        strict=strict,
        attacks=False,
        progress=progress,
    ).metrics


@dataclass
class EvaluationPass:
    """What one evaluation pass measured (see :func:`evaluate_pass`).

    Attributes:
        metrics: the numbers of :func:`evaluate_loaders` (``forget_acc`` ... ``mia_efficacy``).
        audit: flat audit quantities (``"mia/loss/forget_vs_test/auc"`` ...; keys and their meaning
            in :mod:`lightning_unlearn.metrics.keys`), or ``None`` without attacks or when the
            logits were not finite.
        margins: per split, the ``(N,)`` margin of every sample in position order (CPU float32),
            or ``None``.
        samples: per split, the per-sample statistics (``log_p``, ``entropy``,
            ``modified_entropy``, ``margin``; CPU float64) and ``label``, for pictures, or ``None``.
        counts: the number of samples of each split.
    """

    metrics: dict[str, Optional[float]]
    audit: Optional[dict[str, Any]] = None
    margins: Optional[dict[str, Tensor]] = None
    samples: Optional[dict[str, dict[str, Tensor]]] = None
    counts: dict[str, int] = field(default_factory=dict)


@torch.no_grad()
def evaluate_pass(
    model: nn.Module,
    loaders: Mapping[str, Iterable],
    device: Union[str, torch.device, None] = None,
    mia_backend: Literal["torch", "sklearn"] = "torch",
    *,
    distributed: bool = False,
    convert_input: Optional[Callable[[Any], Any]] = None,
    name: str = "model",
    strict: bool = True,
    attacks: bool = True,
    fprs: Sequence[float] = DEFAULT_FPRS,
    keep_samples: bool = False,
    progress: Optional[str] = None,
) -> EvaluationPass:
    """:func:`evaluate_loaders`, plus the population membership attacks from the same forward pass.

    With ``attacks=True`` every batch's logits also feed a
    :class:`~lightning_unlearn.metrics.MembershipAudit` (gathered by position under DDP, like
    MIA-efficacy): the threshold attacks (loss, confidence, entropy, modified entropy; AUC and TPR
    at ``fprs``, forget-vs-test and retain-vs-test), the SSD / Bad Teacher entropy attack, SCRUB's
    loss attack and the per-sample margins. No second pass over the data: the attacks cost a few
    floats per sample and a sort. ``mia_backend`` also picks the attacks' logistic-regression
    solver.

    Args:
        model, loaders, device, mia_backend, distributed, convert_input, name, strict, progress: see
            :func:`evaluate_loaders`.
        attacks: run the population attacks and keep the margins.
        fprs: the low false-positive rates of the TPR readings.
        keep_samples: also return the per-sample statistics (for pictures).

    Returns:
        An :class:`EvaluationPass`.
    """
    missing = [s for s in EVAL_SPLITS if s not in loaders]
    if missing:
        raise ValueError(f"`loaders` lacks the {missing} split(s): pass loaders for {EVAL_SPLITS}.")
    first = next(model.parameters())
    if device is None:
        device = first.device
    if convert_input is None and first.is_floating_point():
        dtype = first.dtype

        def convert_input(x: Any) -> Any:
            return x.to(dtype) if isinstance(x, Tensor) and x.is_floating_point() else x

    rank, world = _rank_and_world(distributed)
    sync = world > 1
    accuracy = {split: ClassificationAccuracy(sync_on_compute=sync).to(device) for split in EVAL_SPLITS}
    mia = MIAEfficacy(backend=mia_backend, sync_on_compute=sync).to(device)
    membership = MembershipAudit(fprs=fprs, backend=mia_backend, sync_on_compute=sync).to(device) if attacks else None
    finite = {split: True for split in EVAL_SPLITS}
    was_training = model.training
    model.eval()
    bar = _progress_bar(progress, loaders)
    try:
        for split in EVAL_SPLITS:
            for offset, x, y in _batches_of_rank(loaders[split], split, rank, world):
                if bar is not None:
                    bar.update(world)
                if convert_input is not None:
                    x = convert_input(x)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x)
                if not finite[split]:
                    continue
                if not bool(torch.isfinite(logits).all()):
                    finite[split] = False
                    continue
                index = torch.arange(offset, offset + len(y), device=device)
                accuracy[split].update(logits, y)
                mia.update(logits, y, split, index=index)
                if membership is not None:
                    membership.update(logits, y, split, index=index)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if sync:  # every rank takes the same decisions below (each compute() is a collective)
        flags = torch.tensor([int(not finite[s]) for s in EVAL_SPLITS], device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        finite = {s: not bool(flag) for s, flag in zip(EVAL_SPLITS, flags.tolist())}
    bad = [s for s in EVAL_SPLITS if not finite[s]]
    if bad and strict:
        raise ValueError(
            f"`{name}` returned non-finite logits (NaN or inf) on the {', '.join(bad)} set(s): its weights or its"
            " forward overflow. Check the network (e.g. `all(p.isfinite().all() for p in net.parameters())`),"
            " reload its trained weights, or lower the learning rate if it diverged in training."
        )
    out: dict[str, Optional[float]] = {
        f"{split}_acc": float(accuracy[split].compute()) if finite[split] else None for split in EVAL_SPLITS
    }
    out["unlearning_accuracy"] = None if out["forget_acc"] is None else 1.0 - out["forget_acc"]
    out["mia_efficacy"] = float(mia.compute()) if not bad else None
    result = EvaluationPass(metrics=out)
    if membership is not None and not bad:
        with membership.sync_context(should_sync=sync):  # gathers every rank's samples (a collective)
            stats, labels = membership.statistics()
        result.audit = flatten_membership(
            membership_audit(stats, labels, attacks=membership.attacks, fprs=membership.fprs, backend=mia_backend)
        )
        result.margins = {split: stats[split]["margin"].float().cpu() for split in EVAL_SPLITS}
        result.counts = {split: int(labels[split].numel()) for split in EVAL_SPLITS}
        if keep_samples:
            result.samples = {
                split: {**{k: v.cpu() for k, v in stats[split].items()}, "label": labels[split].cpu()} for split in EVAL_SPLITS
            }
    return result


def flatten_membership(results: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`~lightning_unlearn.metrics.functional.attacks.membership_audit`'s nested result as flat
    audit quantities: ``mia/<attack>/<pair>/auc``, ``mia/<attack>/<pair>/tpr_at_fpr_<rate>``,
    ``mia/best_threshold/<pair>/auc`` (the highest AUC of the threshold attacks, with
    ``mia/best_threshold/<pair>/attack`` naming it), ``mia/entropy_lr/member_rate`` and
    ``mia/loss_cv/accuracy``."""
    flat: dict[str, Any] = {}
    best: dict[str, tuple[float, str]] = {}
    for attack, pairs in results["threshold"].items():
        for pair, stats in pairs.items():
            for stat, value in stats.items():
                key = "auc" if stat == "auc" else f"tpr_at_fpr_{fpr_tag(float(stat.split('@')[1]))}"
                flat[f"mia/{attack}/{pair}/{key}"] = value
            if pair not in best or stats["auc"] > best[pair][0]:
                best[pair] = (stats["auc"], attack)
    for pair, (value, attack) in best.items():
        flat[f"mia/best_threshold/{pair}/auc"] = value
        flat[f"mia/best_threshold/{pair}/attack"] = attack
    flat["mia/entropy_lr/member_rate"] = results["entropy_lr_member_rate"]
    flat["mia/loss_cv/accuracy"] = results["loss_cv_accuracy"]
    return flat


def evaluate(
    model: nn.Module,
    datamodule: Any,
    device: Union[str, torch.device, None] = None,
    mia_backend: Literal["torch", "sklearn"] = "torch",
    **kwargs: Any,
) -> dict[str, Optional[float]]:
    """:func:`evaluate_loaders` on the evaluation loaders of ``datamodule`` (anything with
    ``evaluation_dataloaders()``, e.g. an :class:`~lightning_unlearn.data.UnlearningDataModule`);
    ``kwargs`` (``distributed``, ``convert_input``, ``name``, ``strict``) go to :func:`evaluate_loaders`."""
    return evaluate_loaders(model, datamodule.evaluation_dataloaders(), device, mia_backend, **kwargs)


def _progress_bar(description: Optional[str], loaders: Mapping[str, Iterable]) -> Any:
    """A tqdm bar over the evaluation batches (``None`` without ``description``); tqdm's
    ``disable=None`` keeps it quiet when stderr is not a terminal."""
    if description is None:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with lightning
        return None
    try:
        total: Optional[int] = sum(len(cast(Sized, loaders[split])) for split in EVAL_SPLITS)  # TypeError: unsized
    except TypeError:
        total = None
    return tqdm(total=total, desc=description, unit="batch", leave=False, disable=None, dynamic_ncols=True)


def _rank_and_world(distributed: bool) -> tuple[int, int]:
    if not distributed or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _xy(batch: Any, split: str) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not isinstance(batch[0], Tensor):
        raise ValueError(
            f"The {split!r} evaluation loader must yield (x, y) pairs of tensors, got {type(batch).__name__}: make the"
            " dataset return (input, label) (or declare the keys of its dict items, `UnlearningDataModule(keys=...)`)."
        )
    return batch[0], torch.as_tensor(batch[1])


def _batches_of_rank(loader: Iterable, split: str, rank: int, world: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(position of the first sample, x, y)`` for the batches of ``loader`` this rank evaluates:
    all of them on one process; batches ``rank, rank + world, ...`` under DDP (a DataLoader with a
    batch sampler is re-built over those batches only, so the others are not even loaded)."""
    if world == 1:
        offset = 0
        for batch in loader:
            x, y = _xy(batch, split)
            yield offset, x, y
            offset += len(y)
        return
    batch_sampler = getattr(loader, "batch_sampler", None)
    if isinstance(loader, DataLoader) and batch_sampler is not None:
        batches = [list(b) for b in batch_sampler]
        offsets = [0]
        for b in batches:
            offsets.append(offsets[-1] + len(b))
        mine = list(range(rank, len(batches), world))
        if not mine:
            return
        shard = DataLoader(
            loader.dataset,
            batch_sampler=[batches[i] for i in mine],
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context if loader.num_workers > 0 else None,
        )
        for i, batch in zip(mine, shard):
            x, y = _xy(batch, split)
            yield offsets[i], x, y
        return
    offset = 0
    for i, batch in enumerate(loader):
        x, y = _xy(batch, split)
        if i % world == rank:
            yield offset, x, y
        offset += len(y)
