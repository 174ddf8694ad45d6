"""Running a comparison: the original, and one row at a time (:func:`run_row`).

Every fit of compare, ``benchmarks/tune.py`` and ``benchmarks/quality.py`` goes through here, so
they train and measure alike: one device, no logger, checkpoints, progress bar or validation;
``seed_everything(seed)`` before every row, so a row does not depend on the rows before it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional, cast

import lightning as L
import torch
from torch import Tensor, nn

from lightning_unlearn import registry
from lightning_unlearn.benchmark.config import DENSE, REFERENCE, MethodSpec, OriginalSpec, PipelineSpec
from lightning_unlearn.callbacks.evaluation import UnlearningEvaluation
from lightning_unlearn.callbacks.magnitude_pruning import MagnitudePruning
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.functional.pruning import canonical_name
from lightning_unlearn.metrics.functional.mia import Backend
from lightning_unlearn.metrics.functional.topology import masks_of, topology_gap
from lightning_unlearn.models import ImageClassifier
from lightning_unlearn.models.network import copy_network, reinitialise
from lightning_unlearn.report import write_json
from lightning_unlearn.validation import check_output_path


def build_method(spec: MethodSpec, original: nn.Module, seed: int) -> Any:
    """The row's method around (a copy of) ``original``, after ``seed_everything(seed)`` so a row
    does not depend on the rows before it; Retrain's ``init_seed`` defaults to ``seed``."""
    L.seed_everything(seed, verbose=False)
    init_args = dict(spec.init_args)
    if spec.method == REFERENCE:  # the compare seed also draws Retrain's initial weights
        init_args.setdefault("init_seed", seed)
    return registry.get(spec.method).cls(model=original, **init_args)


def build_callbacks(spec: MethodSpec) -> list[Any]:
    """The callbacks of a row, instantiated from the registry in config order."""
    return [registry.get(c["callback"]).cls(**dict(c.get("init_args") or {})) for c in spec.callbacks]


def trainer_options(cfg: Any) -> dict[str, Any]:
    """The Trainer settings a compare config fixes for every fit: ``accelerator`` and ``precision``."""
    return {"accelerator": cfg.accelerator, "precision": cfg.get("precision")}


def row_trainer(
    max_epochs: int,
    callbacks: Sequence[Any] = (),
    *,
    accelerator: str = "auto",
    precision: Optional[str] = None,
    progress: bool = False,
    logger: Any = False,
    **overrides: Any,
) -> L.Trainer:
    """The Trainer of the original and of every row: one device, no checkpoints or validation;
    no logger unless ``logger`` is given; Lightning's progress bar (and the evaluation's) only with
    ``progress=True``; ``overrides`` are a row's own settings (``MethodSpec.trainer``)."""
    return L.Trainer(
        max_epochs=int(max_epochs),
        accelerator=accelerator,
        precision=precision,  # type: ignore[arg-type]  # a config string: Lightning validates it
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=bool(progress),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=list(callbacks),
        **overrides,
    )


@contextlib.contextmanager
def quiet_fit_warnings() -> Iterator[None]:
    """Silences Lightning's few-workers and empty-validation warnings of these short fits."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*Total length of .* across ranks is zero.*")
        yield


@contextlib.contextmanager
def lightning_info_silenced() -> Iterator[None]:
    """Lightning's INFO lines (GPU available, model summary...) off for a command's many fits; the
    caller's logging levels are restored afterwards."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def run_command(
    parser: Any, output: Optional[str], run: Callable[[], dict[str, Any]], table: Callable[[dict[str, Any]], None]
) -> None:
    """The shape of a benchmark command: ``output`` checked before anything trains, ``run()``
    with Lightning's INFO lines off (a ``ValueError`` becomes the parser's usage error), the
    results shown by ``table`` and written atomically to ``output`` (JSON) when given."""
    if output is not None:
        try:
            check_output_path(output, "--output")
        except ValueError as exc:
            parser.error(str(exc))
    try:
        with lightning_info_silenced():
            result = run()
    except ValueError as exc:
        parser.error(str(exc))
    table(result)
    if output:
        print(f"\nWrote {write_json(output, result)}", flush=True)


def train_original(
    network: nn.Module, datamodule: Any, spec: OriginalSpec, seed: int, callbacks: Sequence[L.Callback] = (), **options: Any
) -> tuple[nn.Module, float]:
    """Trains ``network`` in place as :class:`~lightning_unlearn.models.ImageClassifier` on the whole
    training set (the forget set included) after ``seed_everything(seed)``; ``callbacks`` join the
    fit (e.g. :class:`EpochSnapshots`, a pruning pipeline), ``options`` go to :func:`row_trainer`.

    Returns:
        The trained network (left in its mode: Lightning keeps submodule modes in fit) and the
        wall time of the fit in seconds.
    """
    L.seed_everything(seed, verbose=False)
    classifier = ImageClassifier(
        network, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, lr_scheduler=spec.lr_scheduler
    )
    tic = time.perf_counter()
    row_trainer(spec.max_epochs, callbacks, **options).fit(classifier, datamodule=datamodule)
    return classifier.model, time.perf_counter() - tic


class EpochSnapshots(L.Callback):
    """Saves the network's weights after the given epochs of a fit (epoch 0: before the first
    step) to ``directory/epoch_{k}.pt``, for a rewind. Reads weights only: the fit is unchanged."""

    def __init__(self, epochs: Sequence[int], directory: str) -> None:
        self.epochs, self.directory = sorted(set(int(e) for e in epochs)), directory
        self.paths: dict[int, str] = {}

    def _save(self, pl_module: L.LightningModule, epoch: int) -> None:
        if epoch in self.epochs:
            path = os.path.join(self.directory, f"epoch_{epoch}.pt")
            model = pl_module.model
            if not isinstance(model, nn.Module):
                raise TypeError(f"{type(pl_module).__name__}.model must be an nn.Module to snapshot, got {type(model).__name__}.")
            torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, path)
            self.paths[epoch] = path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(pl_module, 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(pl_module, trainer.current_epoch + 1)


# ---------------------------------------------------------------------------------- per-row originals
def pipeline_training(pipeline: PipelineSpec, original: OriginalSpec) -> OriginalSpec:
    """The training recipe of a pipeline: its own fields, the original's where it leaves them unset."""
    # `lr_scheduler` is checked to be 'original', None or 'cosine' when the config is read
    lr_scheduler = cast(
        Optional[Literal["cosine"]],
        original.lr_scheduler if pipeline.lr_scheduler == "original" else pipeline.lr_scheduler,
    )
    return OriginalSpec(
        max_epochs=pipeline.max_epochs or original.max_epochs,
        lr=original.lr if pipeline.lr is None else pipeline.lr,
        momentum=original.momentum if pipeline.momentum is None else pipeline.momentum,
        weight_decay=original.weight_decay if pipeline.weight_decay is None else pipeline.weight_decay,
        lr_scheduler=lr_scheduler,
    )


def pipeline_callback(pipeline: PipelineSpec, rewind: Optional[str] = None) -> dict[str, Any]:
    """The ``MagnitudePruning`` of a pipeline, as a row's callback entry (registry name + init args)."""
    args: dict[str, Any] = {"amount": pipeline.amount, "scope": pipeline.scope, "structured": pipeline.structured}
    if pipeline.parameters is not None:
        args["parameters"] = pipeline.parameters
    if pipeline.pipeline == "lottery":
        args.update(method="imp", rounds=pipeline.rounds, schedule="lottery", rewind="start")
    else:
        args.update(method="omp", rewind=rewind)
    return {"callback": "magnitude_pruning", "init_args": args}


def train_pipeline_original(
    pipeline: PipelineSpec,
    dense: Optional[nn.Module],
    untrained: Optional[nn.Module],
    datamodule: Any,
    original: OriginalSpec,
    seed: int,
    rewind: Optional[str] = None,
    **options: Any,
) -> tuple[nn.Module, float]:
    """Makes a sparse original (see :class:`~lightning_unlearn.benchmark.PipelineSpec`) on the whole
    training set: ``omp`` prunes a copy of the trained ``dense`` original, rewinds it to the
    weights saved at ``rewind`` and trains it with the mask; ``lottery`` runs the lottery-ticket
    pipeline from ``untrained`` re-initialised with the pipeline's ``init_seed`` (default ``seed``).

    Returns:
        The sparse network (pruned weights exactly 0, no reparametrisation) and the fit's wall time.
    """
    entry = pipeline_callback(pipeline, rewind)
    if pipeline.pipeline == "lottery":
        if untrained is None:
            raise ValueError("The lottery pipeline needs the `untrained` network.")
        network = reinitialise(copy_network(untrained), seed if pipeline.init_seed is None else pipeline.init_seed)
    else:
        if dense is None:
            raise ValueError(f"The {pipeline.pipeline!r} pipeline prunes the trained `dense` original: none was given.")
        network = copy_network(dense)
    return train_original(
        network, datamodule, pipeline_training(pipeline, original), seed, [MagnitudePruning(**entry["init_args"])], **options
    )


def effective_spec(spec: MethodSpec, pipeline: Optional[PipelineSpec], seed: int, original: OriginalSpec) -> MethodSpec:
    """The row as it runs on its original: a Retrain row of an ``omp`` original trains under its
    mask (``mask: model``); a Retrain row of a ``lottery`` original is the same pipeline from the
    same initialisation on D_r (its ``MagnitudePruning``, ``init_seed`` and training recipe); any
    other row keeps the sparse original's topology (``KeepTopology`` first, unless the row has
    one); an ``UnPruning(score="replay")`` on a ``lottery`` original replays from its
    ``init_seed``. The row's own settings win."""
    if pipeline is None:
        return spec
    init_args, callbacks = dict(spec.init_args), [dict(c) for c in spec.callbacks]
    if spec.method != REFERENCE and not any(c["callback"] == "keep_topology" for c in callbacks):
        callbacks = [{"callback": "keep_topology"}, *callbacks]
    init_seed = seed if pipeline.init_seed is None else pipeline.init_seed
    if spec.method == REFERENCE and pipeline.pipeline == "omp":
        init_args.setdefault("mask", "model")
    elif spec.method == REFERENCE:
        recipe = pipeline_training(pipeline, original)
        init_args.setdefault("init_seed", init_seed)
        for key in ("lr", "momentum", "weight_decay", "lr_scheduler"):
            init_args.setdefault(key, getattr(recipe, key))
        callbacks = [pipeline_callback(pipeline), *callbacks]
        spec = replace(spec, max_epochs=recipe.max_epochs)
    if pipeline.pipeline == "lottery":
        for entry in callbacks:
            args = dict(entry.get("init_args") or {})
            if entry["callback"] == "unpruning" and args.get("score") == "replay" and "init" not in args:
                args.setdefault("init_seed", init_seed)
                entry["init_args"] = args
    return replace(spec, init_args=init_args, callbacks=callbacks)


def reference_rows(specs: Mapping[str, MethodSpec]) -> dict[str, Optional[str]]:
    """Row name -> the Retrain row its gaps are measured to (``None`` for a reference row itself):
    the row's ``reference``, else the first Retrain row without one of the same original."""
    firsts: dict[str, str] = {}
    for name, spec in specs.items():
        if spec.method == REFERENCE and spec.reference is None:
            firsts.setdefault(spec.original, name)
    return {
        name: (None if firsts.get(spec.original) == name else spec.reference or firsts[spec.original])
        for name, spec in specs.items()
    }


def with_shuffle_seed(datamodule: UnlearningDataModule, seed: Optional[int]) -> UnlearningDataModule:
    """``datamodule``, or a shallow copy that orders its training batches by ``seed`` (same data)."""
    if seed is None or seed == datamodule.shuffle_seed:
        return datamodule
    twin = copy.copy(datamodule)
    twin.shuffle_seed = int(seed)
    return twin


def topology_of(network: nn.Module, holders: Sequence[Any] = ()) -> dict[str, Tensor]:
    """The kept masks of ``network`` by canonical name: those the topology callbacks of its fit hold
    (``topology_masks()``, intersected; a kept weight may be exactly 0, e.g. revived at 0), else its
    non-zero conv/linear weights."""
    masks = masks_of(network)
    held: dict[str, Tensor] = {}
    for holder in holders:
        get = getattr(holder, "topology_masks", None)
        for name, mask in (get() if callable(get) else {}).items():
            key = canonical_name(name)
            held[key] = held[key] & mask.cpu() if key in held else mask.detach().cpu()
    return {n: held.get(n, m.cpu()) for n, m in masks.items()}


def pruned_masks(masks: Mapping[str, Tensor], like: Optional[Mapping[str, Tensor]] = None) -> dict[str, Tensor]:
    """``masks`` restricted to the layers ``like`` prunes (those with a pruned entry; default: ``masks`` itself)."""
    names = [n for n, m in (like or masks).items() if not bool(m.all())]
    return {n: masks[n] for n in names}


def row_topologies(
    specs: Mapping[str, MethodSpec],
    references: Mapping[str, Optional[str]],
    originals: Mapping[str, nn.Module],
    topologies: Mapping[str, Mapping[str, Tensor]],
) -> dict[str, dict[str, float]]:
    """The topology gap of every row of a sparse original (``dense`` rows are skipped): IoU of the
    original's and the row's masks (``topologies``, by row: see :func:`topology_of`) with the
    reference row's, and with the noise-floor rows (Retrain rows of the same original that name
    that reference) the floor and the gap closed (see
    :func:`~lightning_unlearn.metrics.functional.topology_gap`); over the layers the original prunes."""
    out: dict[str, dict[str, float]] = {}
    for name, spec in specs.items():
        if spec.original == DENSE:
            continue
        reference = references[name] or name
        before = pruned_masks(topology_of(originals[spec.original]))
        if not before:
            continue
        ref = pruned_masks(topologies[reference], before)
        noise = [
            pruned_masks(topologies[n], before)
            for n, r in references.items()
            if r == reference and specs[n].method == REFERENCE and n != name
        ]
        if name == reference:
            continue
        if all(torch.equal(before[n], ref[n]) for n in before):
            continue  # the reference keeps the original's mask (omp): the topology is fixed by construction
        gap = topology_gap(pruned_masks(topologies[name], before), before, ref, noise)
        out[name] = {
            "density": float(sum(int(m.sum()) for m in before.values()) / sum(m.numel() for m in before.values())),
            **gap,
        }
    return out


@dataclass(frozen=True)
class RowRun:
    """What one row's run leaves behind (see :func:`run_row`).

    Attributes:
        spec: the row that ran.
        method: the fitted method; ``method.model`` is the unlearned (for Retrain: retrained) network.
        evaluation: its :class:`~lightning_unlearn.callbacks.UnlearningEvaluation` (``results``,
            ``report``), or ``None`` for a run without evaluation.
    """

    spec: MethodSpec
    method: Any
    evaluation: Optional[UnlearningEvaluation]

    @property
    def model(self) -> nn.Module:
        """The unlearned network."""
        return self.method.model

    @property
    def after(self) -> dict[str, float]:
        """The unlearned model's metrics (fractions, keys of ``lightning_unlearn.metrics.keys.METRICS``)."""
        return self._results()["after"]

    @property
    def runtime_s(self) -> float:
        """Wall time of the unlearning fit in seconds, evaluation before and after excluded."""
        return self._results()["runtime_s"]

    @property
    def evaluated(self) -> UnlearningEvaluation:
        """The run's :attr:`evaluation` (raises ValueError for a run without evaluation)."""
        if self.evaluation is None:
            raise ValueError(
                f"Row {self.spec.method!r} ran with `evaluation=False`: it has no metrics; run it with"
                " `evaluation=True` or read them from your own callback."
            )
        return self.evaluation

    def _results(self) -> dict[str, Any]:
        return self.evaluated.results


def run_row(
    spec: MethodSpec,
    original: nn.Module,
    datamodule: UnlearningDataModule,
    seed: int,
    *,
    reference: Optional[nn.Module] = None,
    mia_backend: Backend = "torch",
    evaluation: bool = True,
    callbacks: Sequence[L.Callback] = (),
    accelerator: str = "auto",
    precision: Optional[str] = None,
    audits: Optional[Any] = None,
    progress: bool = False,
    logger: Any = False,
    run_config: Optional[dict[str, Any]] = None,
) -> RowRun:
    """Runs one row: ``spec``'s method around (a copy of) ``original``, in its own
    :func:`row_trainer` for ``spec.max_epochs`` epochs (and the row's ``trainer`` settings), after
    ``seed_everything(seed)``.

    The trainer's callbacks are, in order: the row's own (``spec.callbacks``), then the extra
    ``callbacks`` (e.g. a per-epoch scorer), then an
    :class:`~lightning_unlearn.callbacks.UnlearningEvaluation` against ``reference``, which measures
    the model before and after the fit and times the fit between them.

    Args:
        spec: the row (a checked :class:`MethodSpec`).
        original: the trained original network; methods work on a copy of it.
        datamodule: the data and forget request.
        seed: the row's seed (also Retrain's ``init_seed`` unless the row sets one).
        reference: the model every gap is measured to (the Retrain row's ``model``); ``None``
            for the Retrain row itself.
        mia_backend: ``"torch"`` or ``"sklearn"``, the evaluation's MIA attack backend.
        evaluation: ``False`` runs without the evaluation (no metrics, no before pass), for
            callers that score the fit with their own ``callbacks``.
        callbacks: extra callbacks, after the row's own.
        accelerator: Lightning accelerator (see :func:`trainer_options`).
        precision: Lightning precision of the fit.
        audits: the evaluation's audits (``UnlearningEvaluation(audits=...)``, e.g. ``"attacks"``
            for compare's audit columns, ``"standard"`` for a population's margins); an audited
            evaluation does not print its summary.
        progress: show Lightning's progress bar and the evaluation's (see :func:`row_trainer`).
        logger: a Lightning logger for the row's fit (default: none).
        run_config: the configuration the evaluation's report embeds (``recipe.config``) and
            uploads to W&B with its report.

    Returns:
        A :class:`RowRun`: the fitted method (``.model``), and with ``evaluation`` the metrics
        (``.after``, fractions) and the fit's wall time (``.runtime_s``).

    Raises:
        ValueError: when the row cannot run on this data or with this reference (the method, a
            callback or the evaluation says why; this package's parts raise before any step).
    """
    method = build_method(spec, original, seed)
    bind = getattr(method, "use_reference", None)  # e.g. OracleMatching(oracle="reference") matches the row's reference
    if callable(bind) and reference is not None:
        bind(reference)
    evaluator = (
        UnlearningEvaluation(reference=reference, mia_backend=mia_backend, audits=audits, verbose=audits is None)
        if evaluation
        else None
    )
    if evaluator is not None and run_config is not None:
        evaluator.run_config = run_config
    trainer_callbacks = [*build_callbacks(spec), *callbacks, *([evaluator] if evaluator is not None else [])]
    row_trainer(
        spec.max_epochs,
        trainer_callbacks,
        accelerator=accelerator,
        precision=precision,
        progress=progress,
        logger=logger,
        **dict(spec.trainer or {}),
    ).fit(method, datamodule=datamodule)
    return RowRun(spec=spec, method=method, evaluation=evaluator)
