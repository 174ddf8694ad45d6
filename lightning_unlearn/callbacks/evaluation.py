"""`UnlearningEvaluation`: measures forgetting, utility and privacy before and after, logs and reports."""

from __future__ import annotations

import copy
import os
import time
from typing import Any, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lightning_unlearn.data.access import require_unlearning_data
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.metrics.evaluation import evaluate
from lightning_unlearn.metrics.forgetting_check import forgetting_check
from lightning_unlearn.metrics.functional import avg_gap, metric_gaps
from lightning_unlearn.metrics.keys import METRICS
from lightning_unlearn.metrics.topology import topology_report
from lightning_unlearn.models.network import check_logits, network_of
from lightning_unlearn.registry import register
from lightning_unlearn.report import build_report, read_report, write_report


@register(
    "evaluation", kind="callback", cost="one inference pass over D_f, D_r and D_t before and after fit",
    paper="OPTML protocol (UA, RA, TA, MIA-efficacy, Avg. Gap; Jia et al. 2023, Fan et al. 2024)",
)
class UnlearningEvaluation(Callback):
    """Evaluates the original model at fit start and the unlearned model at fit end, on the
    forget, retain and test sets, logs every number and writes the unlearning report.

    Works with any LightningModule: the classifier is ``pl_module.model`` when it exists (every
    method wrapper), else ``pl_module``. "Before" is ``pl_module.original_model`` when the
    module keeps one, else the network as it stands at fit start.

    Logged (to every logger of the trainer, at the final step): ``{prefix}/<metric>``,
    ``{prefix}/before/<metric>``, and with a reference ``{prefix}/reference/<metric>``,
    ``{prefix}/gap/<metric>`` (after - reference) and ``{prefix}/avg_gap`` (mean absolute gap
    over UA, RA, TA and MIA-efficacy: SalUn's "Avg. Gap"). Metrics are forget/retain/test
    accuracy, unlearning accuracy (UA = 1 - forget accuracy) and MIA-efficacy, as fractions.
    A ``WandbLogger`` also gets a summary table ``{prefix}/summary``. With pruning callbacks on the
    trainer, sparsity and mask-IoU figures (``{prefix}/topology/*``) are logged and reported too.

    Nothing silently unforgotten: at fit end,
    :func:`~lightning_unlearn.metrics.forgetting_check.forgetting_check` compares the original's and
    the unlearned model's figures (class-wise: forget accuracy still at least half the original's;
    random: at least half of the original's forget-minus-test accuracy margin left). When the forget
    set is still classified like training data it warns with the figures and the remedy, and the
    finding (:meth:`ForgettingFinding.as_dict`) is in ``results["forgetting_check"]`` and the report's
    ``metrics.forgetting_check`` (absent from the report, ``None`` in ``results``, when forgotten).

    Args:
        report_path: where to write the JSON report (``None``: no file; ``callback.report`` still holds it).
        reference: the reference model (typically a Retrain result) to compare against.
        reference_report: path of a reference run's report; its ``metrics.after`` is the reference.
        datamodule: the evaluation data when the trainer's datamodule is not an
            :class:`UnlearningDataModule` (e.g. a user's module trained on its own loaders).
        mia_backend: ``"torch"`` (native, on the model's device) or ``"sklearn"`` (exact OPTML parity).
        log_prefix: prefix of every logged key.

    Raises:
        ValueError: at fit start, before any weight changes: no unlearning data, or a reference
            model whose number of classes differs from the model's.

    Example::

        trainer = L.Trainer(max_epochs=5, callbacks=[UnlearningEvaluation(report_path="report.json")])
        trainer.fit(RandomLabel(model=net), datamodule=dm)
    """

    def __init__(
        self,
        report_path: Optional[str] = None,
        reference: Optional[nn.Module] = None,
        reference_report: Optional[str] = None,
        datamodule: Optional[UnlearningDataModule] = None,
        mia_backend: Literal["torch", "sklearn"] = "torch",
        log_prefix: str = "unlearn",
    ) -> None:
        if reference is not None and reference_report is not None:
            raise ValueError("Give either `reference` (a model) or `reference_report` (a report path), not both.")
        if reference is not None and not isinstance(reference, nn.Module):
            raise ValueError(f"`reference` must be an nn.Module, got {type(reference).__name__}.")
        if mia_backend not in ("torch", "sklearn"):
            raise ValueError(f"`mia_backend` must be 'torch' or 'sklearn', got {mia_backend!r}.")
        self.report_path, self.reference, self.reference_report = report_path, reference, reference_report
        self.datamodule, self.mia_backend, self.log_prefix = datamodule, mia_backend, log_prefix
        self.results: dict[str, Any] = {}
        self.report: Optional[dict[str, Any]] = None
        self._start: Optional[float] = None
        self._runtime: Optional[float] = None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._data(trainer)  # fail early, before any weight changes

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = self._data(trainer)
        network = network_of(pl_module)
        device = pl_module.device
        classes = num_logits(network, data, "model", device)
        reference = None
        if self.reference is not None:
            reference = copy.deepcopy(self.reference).to(device)
            ref_classes = num_logits(reference, data, "reference", device)
            if ref_classes != classes:
                raise ValueError(
                    f"`reference` returns {ref_classes} logits but the model returns {classes}: the reference must"
                    " classify the same classes (e.g. a Retrain of the same architecture)."
                )
        original = getattr(pl_module, "original_model", None)
        if isinstance(original, nn.Module):
            before = evaluate(copy.deepcopy(original).to(device), data, device, self.mia_backend)
        else:
            before = evaluate(network, data, device, self.mia_backend)
        if reference is not None:
            ref_metrics = evaluate(reference, data, device, self.mia_backend)
        elif self.reference_report is not None:
            ref_metrics = read_report(self.reference_report)["metrics"]["after"]
        else:
            ref_metrics = None
        self.results = {"before": before, "reference": ref_metrics}
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            self._runtime = time.perf_counter() - self._start

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "before" not in self.results:
            return
        data = self._data(trainer)
        after = evaluate(network_of(pl_module), data, pl_module.device, self.mia_backend)
        reference = self.results["reference"]
        gap = None
        if reference is not None:
            gap = metric_gaps(after, reference, METRICS)
            gap["avg_gap"] = avg_gap(after, reference)
        runtime = self._runtime if self._runtime is not None else time.perf_counter() - (self._start or 0.0)
        topology = topology_report(trainer.callbacks)  # sparse models: sparsity and mask IoU vs the reference
        finding = forgetting_check(self.results["before"], after, classwise=bool(data.forget.classes))
        if finding is not None:
            rank_zero_warn(finding.message)
        self.results.update(after=after, gap=gap, runtime_s=runtime, topology=topology,
                            forgetting_check=None if finding is None else finding.as_dict())
        self._log(trainer)
        self.report = build_report(
            method=type(pl_module).__name__,
            hyperparameters=dict(getattr(pl_module, "hparams", {}) or {}),
            forget=data.forget_summary(),
            before=self.results["before"], after=after, reference=reference, gap=gap,
            runtime_s=runtime, seed=_global_seed(),
        )
        if topology is not None:
            self.report["metrics"]["topology"] = topology
        if finding is not None:
            self.report["metrics"]["forgetting_check"] = self.results["forgetting_check"]
        if self.report_path is not None and trainer.is_global_zero:
            write_report(self.report_path, self.report)

    # ------------------------------------------------------------------ helpers
    def _data(self, trainer: L.Trainer) -> UnlearningDataModule:
        return require_unlearning_data(
            trainer, "UnlearningEvaluation", self.datamodule, "or pass `UnlearningEvaluation(datamodule=...)`"
        )

    def flat_metrics(self) -> dict[str, float]:
        """Every logged number as ``{key: value}``."""
        p, out = self.log_prefix, {}
        out.update({f"{p}/{k}": v for k, v in self.results.get("after", {}).items()})
        out.update({f"{p}/before/{k}": v for k, v in self.results.get("before", {}).items()})
        if self.results.get("reference") is not None:
            out.update({f"{p}/reference/{k}": v for k, v in self.results["reference"].items() if k in METRICS})
        for k, v in (self.results.get("gap") or {}).items():
            out[f"{p}/avg_gap" if k == "avg_gap" else f"{p}/gap/{k}"] = v
        for k, v in (self.results.get("topology") or {}).items():
            if isinstance(v, float):
                out[f"{p}/topology/{k}"] = v
        out[f"{p}/runtime_s"] = self.results.get("runtime_s", 0.0)
        return out

    def _log(self, trainer: L.Trainer) -> None:
        metrics = self.flat_metrics()
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if type(logger).__name__ == "WandbLogger":
                rows = [
                    [k, self.results["before"].get(k), self.results["after"].get(k),
                     (self.results["reference"] or {}).get(k), (self.results["gap"] or {}).get(k)]
                    for k in METRICS
                ]
                logger.log_table(key=f"{self.log_prefix}/summary",
                                 columns=["metric", "before", "after", "reference", "gap"], data=rows)
            logger.save()


def _global_seed() -> Optional[int]:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None


def num_logits(model: nn.Module, datamodule: UnlearningDataModule, name: str, device: Optional[torch.device] = None) -> int:
    """Checks ``model`` returns ``(batch, classes)`` logits on the data; returns the number of logits."""
    x, _ = next(iter(datamodule.retain_dataloader()))
    device = device if device is not None else next(model.parameters()).device
    return check_logits(model, x[:2].to(device), datamodule.num_classes, name)
