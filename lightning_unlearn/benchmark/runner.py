"""Running a comparison: the original, and one row at a time (:func:`run_row`).

Every fit of compare, ``benchmarks/tune.py`` and ``benchmarks/quality.py`` goes through here, so
they train and measure alike: one device, no logger, checkpoints, progress bar or validation;
``seed_everything(seed)`` before every row, so a row does not depend on the rows before it.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import lightning as L
from torch import nn

from lightning_unlearn import registry
from lightning_unlearn.benchmark.config import REFERENCE, MethodSpec, OriginalSpec
from lightning_unlearn.callbacks.evaluation import UnlearningEvaluation
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.models import ImageClassifier


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


def row_trainer(max_epochs: int, callbacks: Sequence[Any] = (), *, accelerator: str = "auto",
                precision: Optional[str] = None, progress: bool = False, logger: Any = False) -> L.Trainer:
    """The Trainer of the original and of every row: one device, no checkpoints or validation;
    no logger unless ``logger`` is given; Lightning's progress bar (and the evaluation's) only with
    ``progress=True``."""
    return L.Trainer(
        max_epochs=int(max_epochs), accelerator=accelerator, precision=precision, devices=1, logger=logger,
        enable_checkpointing=False, enable_progress_bar=bool(progress), enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=list(callbacks),
    )


@contextlib.contextmanager
def quiet_fit_warnings() -> Iterator[None]:
    """Silences Lightning's few-workers and empty-validation warnings of these short fits."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*Total length of .* across ranks is zero.*")
        yield


def train_original(network: nn.Module, datamodule: Any, spec: OriginalSpec, seed: int, **options: Any) -> tuple[nn.Module, float]:
    """Trains ``network`` in place as :class:`~lightning_unlearn.models.ImageClassifier` on the whole
    training set (the forget set included) after ``seed_everything(seed)``; ``options`` go to
    :func:`row_trainer`.

    Returns:
        The trained network (left in its mode: Lightning keeps submodule modes in fit) and the
        wall time of the fit in seconds.
    """
    L.seed_everything(seed, verbose=False)
    classifier = ImageClassifier(
        network, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, lr_scheduler=spec.lr_scheduler
    )
    tic = time.perf_counter()
    row_trainer(spec.max_epochs, **options).fit(classifier, datamodule=datamodule)
    return classifier.model, time.perf_counter() - tic


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

    def _results(self) -> dict[str, Any]:
        if self.evaluation is None:
            raise ValueError(f"Row {self.spec.method!r} ran with `evaluation=False`: it has no metrics; run it with"
                             " `evaluation=True` or read them from your own callback.")
        return self.evaluation.results


def run_row(
    spec: MethodSpec,
    original: nn.Module,
    datamodule: UnlearningDataModule,
    seed: int,
    *,
    reference: Optional[nn.Module] = None,
    mia_backend: str = "torch",
    evaluation: bool = True,
    callbacks: Sequence[L.Callback] = (),
    accelerator: str = "auto",
    precision: Optional[str] = None,
    progress: bool = False,
    logger: Any = False,
    run_config: Optional[dict[str, Any]] = None,
) -> RowRun:
    """Runs one row: ``spec``'s method around (a copy of) ``original``, in its own
    :func:`row_trainer` for ``spec.max_epochs`` epochs, after ``seed_everything(seed)``.

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
    evaluator = UnlearningEvaluation(reference=reference, mia_backend=mia_backend) if evaluation else None
    if evaluator is not None and run_config is not None:
        evaluator.run_config = run_config
    trainer_callbacks = [*build_callbacks(spec), *callbacks, *([evaluator] if evaluator is not None else [])]
    row_trainer(spec.max_epochs, trainer_callbacks, accelerator=accelerator, precision=precision, progress=progress,
                logger=logger).fit(method, datamodule=datamodule)
    return RowRun(spec=spec, method=method, evaluation=evaluator)
