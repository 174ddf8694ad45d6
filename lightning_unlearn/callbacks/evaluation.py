"""`UnlearningEvaluation`: measures forgetting, utility and privacy before and after, logs and reports."""

from __future__ import annotations

import os
import time
from typing import Any, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.optim import Optimizer

from lightning_unlearn.data.access import convert_input, require_unlearning_data
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.metrics.evaluation import evaluate
from lightning_unlearn.metrics.functional import avg_gap, metric_gaps
from lightning_unlearn.metrics.keys import METRICS
from lightning_unlearn.metrics.topology import topology_report
from lightning_unlearn.models.divergence import DivergenceGuard
from lightning_unlearn.models.network import check_logits, copy_network, network_of, sample_like
from lightning_unlearn.models.weights import weights_sha256
from lightning_unlearn.registry import register
from lightning_unlearn.report import build_report, json_safe, read_report, write_report
from lightning_unlearn.report.recipe import (
    callbacks_recipe,
    data_recipe,
    method_recipe,
    model_recipe,
    optimizers_recipe,
    redact_indices,
    schedulers_recipe,
    trainer_recipe,
)
from lightning_unlearn.validation import check_bool, check_choice, check_int, check_optional_path, check_output_path, check_str


@register(
    "evaluation", kind="callback", cost="one inference pass over D_f, D_r and D_t before and after fit",
    paper="OPTML protocol (UA, RA, TA, MIA-efficacy, Avg. Gap; Jia et al. 2023, Fan et al. 2024)",
)
class UnlearningEvaluation(Callback):
    """Evaluates the original model before the fit and the unlearned model at fit end, on the
    forget, retain and test sets, logs every number and writes the unlearning report.

    Works with any LightningModule: the classifier is ``pl_module.model`` when it exists (every
    method wrapper), else ``pl_module``. "Before" is ``pl_module.original_model`` when the
    module keeps one, else the network as it stands in ``setup``, before any callback changes a
    weight (both in the precision they were handed in).

    **When.** ``setup`` refuses what cannot run before any weight changes (no unlearning data, a
    ``report_path`` that cannot be written, an unreadable ``reference_report``, a model or
    reference that does not return finite logits for the data's classes), then measures the
    original and the reference. At fit end the unlearned model is measured (inputs converted as
    the precision plugin converts training batches, so ``bf16-true`` works), the report is
    written atomically (a temporary file in the same folder, then ``os.replace``) and rank 0
    prints a before/after/reference table and the report's path. With ``every_n_epochs`` the
    current model is also measured at the end of those training epochs and its numbers logged
    with ``pl_module.log``, so ``ModelCheckpoint(monitor="unlearn/avg_gap")`` or
    ``EarlyStopping`` can use them (the retrain-free methods edit the weights in their own
    epoch-end hook, after this measurement: read their end-of-fit values).

    **Failures lose nothing.** A non-finite loss stops the fit cleanly (the module's
    :class:`~lightning_unlearn.models.divergence.DivergenceGuard`, or this callback's for a
    user's module): the report is still written with ``status: "diverged"``, the step, and the
    metrics that could be computed. An exception or Ctrl-C after the original was measured writes
    the report with ``status: "interrupted"``.

    **DDP.** Every evaluation shares the batches over the ranks and gathers the metrics by
    sample position (:func:`~lightning_unlearn.metrics.evaluate_loaders`): every number equals the
    single-process value on the same weights, exactly. Rank 0 writes the report.

    Logged (to every logger, and into ``trainer.callback_metrics``): ``{prefix}/<metric>``,
    ``{prefix}/before/<metric>``, and with a reference ``{prefix}/reference/<metric>``,
    ``{prefix}/gap/<metric>`` (after - reference) and ``{prefix}/avg_gap`` (mean absolute gap
    over UA, RA, TA and MIA-efficacy: SalUn's "Avg. Gap"). Metrics are forget/retain/test
    accuracy, unlearning accuracy (UA = 1 - forget accuracy) and MIA-efficacy, as fractions.
    The report's ``recipe`` goes to every logger's hyper-parameters (``{prefix}/recipe``; the
    W&B config). A ``WandbLogger`` also gets a summary table ``{prefix}/summary``. With pruning
    callbacks on the trainer, sparsity and mask-IoU figures (``{prefix}/topology/*``) are
    logged and reported too.

    Args:
        report_path: where to write the JSON report (``None``: no file; ``callback.report`` still holds it).
        reference: the reference model (typically a Retrain result) to compare against.
        reference_report: path of a reference run's report; its ``metrics.after`` is the reference.
        datamodule: the evaluation data when the trainer's datamodule is not an
            :class:`UnlearningDataModule` (e.g. a user's module trained on its own loaders).
        mia_backend: ``"torch"`` (native, on the model's device) or ``"sklearn"`` (exact OPTML parity).
        log_prefix: prefix of every logged key.
        every_n_epochs: also measure the model every that many training epochs (``None``: only
            before and after the fit).
        verbose: print the summary table and the report's path at fit end (rank 0).

    Attributes:
        run_config: the resolved configuration of the run, embedded in the report's recipe (the
            ``lightning-unlearn`` CLI sets it); ``None`` otherwise.

    Raises:
        ValueError: at construction, invalid arguments; in ``setup``, before any weight changes,
            the failures listed above.

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
        every_n_epochs: Optional[int] = None,
        verbose: bool = True,
    ) -> None:
        if reference is not None and reference_report is not None:
            raise ValueError("Give either `reference` (a model) or `reference_report` (a report path), not both.")
        if reference is not None and not isinstance(reference, nn.Module):
            raise ValueError(f"`reference` must be an nn.Module, got {type(reference).__name__}.")
        if datamodule is not None and not isinstance(datamodule, UnlearningDataModule):
            raise ValueError(
                f"`datamodule` must be an UnlearningDataModule, got {type(datamodule).__name__}: wrap yours with"
                " UnlearningDataModule.from_datamodule(dm, forget=ForgetSpec(...))."
            )
        self.report_path = check_optional_path(report_path, "report_path", "the path of the JSON report, e.g. 'report.json'")
        self.reference_report = check_optional_path(reference_report, "reference_report", "the path of a Retrain run's report")
        self.reference, self.datamodule = reference, datamodule
        self.mia_backend = check_choice(mia_backend, "mia_backend", ("torch", "sklearn"))
        self.log_prefix = check_str(log_prefix, "log_prefix", "e.g. 'unlearn'")
        self.every_n_epochs = None if every_n_epochs is None else check_int(
            every_n_epochs, "every_n_epochs", minimum=1, hint="e.g. 1 to measure after every epoch, or None")
        self.verbose = check_bool(verbose, "verbose")
        self.run_config: Optional[dict[str, Any]] = None
        #: Extra figures for W&B (name -> matplotlib figure, PIL image or image path), e.g. audit plots.
        self.figures: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.report: Optional[dict[str, Any]] = None
        self._guard: Optional[DivergenceGuard] = None
        self._own_guard = False
        self._recipe: dict[str, Any] = {}
        self._sha256_before: Optional[str] = None
        self._elapsed = 0.0  # unlearning time of earlier runs (resumed from a checkpoint)
        self._start: Optional[float] = None
        self._runtime: Optional[float] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(log_prefix=self.log_prefix)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # Everything that can refuse the run happens here, before any callback changes a weight.
        data = self._data(trainer)
        if self.report_path is not None:
            check_output_path(self.report_path, "report_path")
        network = network_of(pl_module)
        x, _ = next(iter(data.retain_dataloader()))
        classes = check_logits(network, sample_like(network, x[:2]), data.num_classes, "model")
        device = trainer.strategy.root_device
        reference = None
        if self.reference is not None:
            reference = copy_network(self.reference).to(device)
            ref_classes = check_logits(reference, sample_like(reference, x[:2]), data.num_classes, "reference")
            if ref_classes != classes:
                raise ValueError(
                    f"`reference` returns {ref_classes} logits but the model returns {classes}: the reference must"
                    " classify the same classes (e.g. a Retrain of the same architecture)."
                )
        reference_metrics = self._read_reference_report() if self.reference_report is not None else None
        guard = getattr(pl_module, "divergence_guard", None)
        self._own_guard = not isinstance(guard, DivergenceGuard)
        self._guard = DivergenceGuard() if self._own_guard else guard
        self.results, self.report, self._runtime, self._start = {}, None, None, None
        original = getattr(pl_module, "original_model", None)
        original = original if isinstance(original, nn.Module) else network
        self._sha256_before = weights_sha256(original)
        self._recipe = {"method": method_recipe(pl_module), "data": data_recipe(data)}
        if trainer.ckpt_path is not None:
            return  # resuming: the measurements of the interrupted run come back with this callback's state
        distributed = trainer.world_size > 1
        on_device = original if next(original.parameters()).device == device else copy_network(original).to(device)
        before = evaluate(on_device, data, device, self.mia_backend, distributed=distributed, name="model",
                          progress=_progress(trainer, "evaluating the original"))
        if reference is not None:
            reference_metrics = evaluate(reference, data, device, self.mia_backend, distributed=distributed, name="reference",
                                         progress=_progress(trainer, "evaluating the reference"))
        self.results = {"before": before, "reference": reference_metrics}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "before" not in self.results:  # resumed from a checkpoint taken without this callback
            self._measure_before(trainer, pl_module)
        self._recipe.update(
            optimizers=optimizers_recipe(trainer), lr_schedulers=schedulers_recipe(trainer),
            callbacks=callbacks_recipe(trainer.callbacks),
        )
        for logger in trainer.loggers:
            logger.log_hyperparams({f"{self.log_prefix}/recipe": self._current_recipe(trainer, pl_module, None)})
        self._publish(trainer, {k: v for k, v in self.flat_metrics().items() if "/before/" in k or "/reference/" in k})
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._own_guard and self._guard is not None:
            self._guard.snapshot(trainer, pl_module)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self._own_guard and self._guard is not None:
            self._guard.check_loss(trainer, loss)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        if self._own_guard and self._guard is not None:
            self._guard.before_optimizer_step(trainer, optimizer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs is None or (trainer.current_epoch + 1) % self.every_n_epochs or self._diverged():
            return
        current = self._evaluate(trainer, pl_module, strict=True)
        values = {f"{self.log_prefix}/{k}": v for k, v in current.items()}
        reference = self.results.get("reference")
        if reference is not None:
            values.update({f"{self.log_prefix}/gap/{k}": v for k, v in metric_gaps(current, reference, METRICS).items()})
            values[f"{self.log_prefix}/avg_gap"] = avg_gap(current, reference)
        for key, value in values.items():
            pl_module.log(key, float(value), on_step=False, on_epoch=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            self._runtime = self._elapsed + time.perf_counter() - self._start

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "before" not in self.results:
            return
        diverged = self._diverged()
        after = self._evaluate(trainer, pl_module, strict=not diverged)
        status = "diverged" if diverged else "completed"
        failure = dict(self._guard.record) if diverged and self._guard is not None else None
        self._finish(trainer, pl_module, after, status, failure)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if "before" not in self.results or self.report is not None:
            return  # nothing was measured yet (a refused input), or the report exists already
        failure = {
            "reason": f"{type(exception).__name__}: {str(exception).strip()[:300]}",
            "step": int(trainer.global_step), "epoch": int(trainer.current_epoch),
        }
        if self._start is not None and self._runtime is None:
            self._runtime = self._elapsed + time.perf_counter() - self._start
        try:
            self._finish(trainer, pl_module, None, "interrupted", failure)
        except Exception as err:  # never hide the exception that stopped the run
            rank_zero_warn(f"UnlearningEvaluation could not write the report of the interrupted run: {err}")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        elapsed = self._elapsed + (time.perf_counter() - self._start if self._start is not None else 0.0)
        return {
            "before": self.results.get("before"), "reference": self.results.get("reference"),
            "sha256_before": self._sha256_before, "runtime_s": elapsed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("before") is not None:
            self.results = {"before": state_dict["before"], "reference": state_dict.get("reference")}
        if state_dict.get("sha256_before") is not None:
            self._sha256_before = state_dict["sha256_before"]
        self._elapsed = float(state_dict.get("runtime_s") or 0.0)

    # ------------------------------------------------------------------ helpers
    def _data(self, trainer: L.Trainer) -> UnlearningDataModule:
        return require_unlearning_data(
            trainer, "UnlearningEvaluation", self.datamodule, "or pass `UnlearningEvaluation(datamodule=...)`"
        )

    def _diverged(self) -> bool:
        return self._guard is not None and self._guard.diverged

    def _read_reference_report(self) -> dict[str, float]:
        report = read_report(self.reference_report, "reference_report")
        if report.get("status", "completed") != "completed":
            raise ValueError(
                f"`reference_report`={self.reference_report!r} is the report of a run that {report['status']}: use the"
                " report of a completed Retrain run."
            )
        after = report["metrics"].get("after") or {}
        bad = [k for k in METRICS if not isinstance(after.get(k), (int, float)) or not 0.0 <= after[k] <= 1.0]
        if bad:
            raise ValueError(
                f"`reference_report`={self.reference_report!r} lacks valid metrics.after values for {bad}: use the"
                " report of a completed Retrain run."
            )
        return {k: float(after[k]) for k in METRICS}

    def _measure_before(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data, device = self._data(trainer), pl_module.device
        original = getattr(pl_module, "original_model", None)
        network = copy_network(original).to(device) if isinstance(original, nn.Module) else network_of(pl_module)
        convert = None if isinstance(original, nn.Module) else (lambda x: convert_input(trainer, x))
        before = evaluate(network, data, device, self.mia_backend, distributed=trainer.world_size > 1, convert_input=convert,
                          progress=_progress(trainer, "evaluating the original"))
        reference = None
        if self.reference is not None:
            reference = evaluate(copy_network(self.reference).to(device), data, device, self.mia_backend,
                                 distributed=trainer.world_size > 1, name="reference",
                                 progress=_progress(trainer, "evaluating the reference"))
        elif self.reference_report is not None:
            reference = self._read_reference_report()
        self.results = {"before": before, "reference": reference}

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, strict: bool) -> dict[str, Any]:
        return evaluate(
            network_of(pl_module), self._data(trainer), pl_module.device, self.mia_backend,
            distributed=trainer.world_size > 1, convert_input=lambda x: convert_input(trainer, x),
            name="model (after unlearning)", strict=strict, progress=_progress(trainer, "evaluating after unlearning"),
        )

    def _current_recipe(self, trainer: L.Trainer, pl_module: L.LightningModule, sha256_after: Optional[str]) -> dict[str, Any]:
        return redact_indices({
            "method": self._recipe.get("method"),
            "optimizers": self._recipe.get("optimizers", []),
            "lr_schedulers": self._recipe.get("lr_schedulers", []),
            "callbacks": self._recipe.get("callbacks", []),
            "trainer": trainer_recipe(trainer),
            "data": self._recipe.get("data"),
            "model": model_recipe(network_of(pl_module), self._sha256_before, sha256_after),
            "config": self.run_config,
        })

    def _hyperparameters(self, pl_module: L.LightningModule) -> dict[str, Any]:
        """The method's arguments, with the optimiser's in force (a CLI ``--optimizer`` or an
        ``optimizer=`` factory replaces ``lr``/``momentum``/``weight_decay``)."""
        hparams = {k: v for k, v in dict(getattr(pl_module, "hparams", {}) or {}).items() if not str(k).startswith("_")}
        optimizers, schedulers = self._recipe.get("optimizers") or [], self._recipe.get("lr_schedulers") or []
        if optimizers:
            group = optimizers[0]["param_groups"][0]
            hparams["optimizer"] = optimizers[0]["class"]
            for key in ("lr", "momentum", "weight_decay"):
                if key in group:
                    hparams[key] = group.get("initial_lr", group[key]) if key == "lr" else group[key]
                else:
                    hparams.pop(key, None)
        if schedulers:
            hparams["lr_scheduler"] = schedulers[0]["class"]
        return hparams

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, after: Optional[dict[str, Any]], status: str,
                failure: Optional[dict[str, Any]]) -> None:
        reference = self.results.get("reference")
        gap = None
        if reference is not None and after is not None:
            gap = {k: None for k in METRICS}
            gap.update(metric_gaps({k: v for k, v in after.items() if v is not None}, reference,
                                   [k for k in METRICS if after.get(k) is not None]))
            complete = all(after.get(k) is not None for k in METRICS)
            gap["avg_gap"] = avg_gap(after, reference) if complete else None
        runtime = self._runtime if self._runtime is not None else self._elapsed + time.perf_counter() - (self._start or time.perf_counter())
        topology = topology_report(trainer.callbacks)  # sparse models: sparsity and mask IoU vs the reference
        self.results.update(after=after, gap=gap, runtime_s=runtime, topology=topology, status=status)
        recipe = self._current_recipe(trainer, pl_module, weights_sha256(network_of(pl_module)))
        data = self._data(trainer)
        self.report = build_report(
            method=type(pl_module).__name__, hyperparameters=self._hyperparameters(pl_module),
            forget=data.forget_summary(), before=self.results["before"], after=after, reference=reference, gap=gap,
            runtime_s=runtime, seed=_global_seed(), status=status, failure=failure, recipe=recipe,
        )
        if topology is not None:
            self.report["metrics"]["topology"] = topology
        if self.report_path is not None and trainer.is_global_zero:
            write_report(self.report_path, self.report)
        flat = self.flat_metrics()
        self._publish(trainer, flat)
        self._log(trainer, flat, recipe, status)
        if self.verbose:
            rank_zero_info(self.summary())

    def _publish(self, trainer: L.Trainer, values: dict[str, Any]) -> None:
        """Puts ``values`` into ``trainer.callback_metrics`` (where ModelCheckpoint, EarlyStopping
        and a user's code read a fit's results)."""
        metrics = trainer.callback_metrics
        for key, value in values.items():
            if value is not None:
                metrics[key] = torch.tensor(float(value), dtype=torch.float64)

    def flat_metrics(self) -> dict[str, float]:
        """Every logged number as ``{key: value}`` (values that could not be computed are left out)."""
        p, out = self.log_prefix, {}
        out.update({f"{p}/{k}": v for k, v in (self.results.get("after") or {}).items()})
        out.update({f"{p}/before/{k}": v for k, v in (self.results.get("before") or {}).items()})
        if self.results.get("reference") is not None:
            out.update({f"{p}/reference/{k}": v for k, v in self.results["reference"].items() if k in METRICS})
        for k, v in (self.results.get("gap") or {}).items():
            out[f"{p}/avg_gap" if k == "avg_gap" else f"{p}/gap/{k}"] = v
        for k, v in (self.results.get("topology") or {}).items():
            if isinstance(v, float):
                out[f"{p}/topology/{k}"] = v
        if "runtime_s" in self.results:
            out[f"{p}/runtime_s"] = self.results["runtime_s"]
        return {k: v for k, v in out.items() if v is not None}

    def _log(self, trainer: L.Trainer, metrics: dict[str, float], recipe: dict[str, Any], status: str) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.log_hyperparams({f"{self.log_prefix}/recipe": recipe, f"{self.log_prefix}/status": status})
            if type(logger).__name__ == "WandbLogger":
                rows = [
                    [k, (self.results["before"] or {}).get(k), (self.results["after"] or {}).get(k),
                     (self.results["reference"] or {}).get(k), (self.results["gap"] or {}).get(k)]
                    for k in METRICS
                ]
                logger.log_table(key=f"{self.log_prefix}/summary",
                                 columns=["metric", "before", "after", "reference", "gap"], data=rows)
                self._log_wandb_extras(logger)
            logger.save()

    def _log_wandb_extras(self, logger: Any) -> None:
        """What a W&B user expects beyond the numbers: the JSON report and the run's configuration
        as artifacts (types ``unlearning-report`` and ``config``), and the figures as images: an
        accuracy chart (before / after / reference on forget, retain, test; needs matplotlib) and
        every figure in :attr:`figures` (name -> matplotlib figure, PIL image or image path)."""
        import tempfile

        import wandb
        import yaml

        run = logger.experiment
        with tempfile.TemporaryDirectory() as folder:
            report = os.path.join(folder, "unlearning_report.json")
            write_report(report, self.report)
            artifact = wandb.Artifact(f"report-{run.id}", type="unlearning-report",
                                      metadata={"status": self.results.get("status")})
            artifact.add_file(report)
            run.log_artifact(artifact)
            if self.run_config is not None:
                config = os.path.join(folder, "config.yaml")
                with open(config, "w") as handle:
                    yaml.safe_dump(json_safe(self.run_config), handle, sort_keys=False)
                artifact = wandb.Artifact(f"config-{run.id}", type="config")
                artifact.add_file(config)
                run.log_artifact(artifact)
        figures = dict(self.figures)
        chart = self._accuracy_figure()
        if chart is not None:
            figures.setdefault("accuracy", chart)
        for name, figure in figures.items():
            logger.log_image(key=f"{self.log_prefix}/figures/{name}", images=[figure])
        if chart is not None:
            import matplotlib.pyplot as plt

            plt.close(chart)

    def _accuracy_figure(self) -> Any:
        """Bars of forget / retain / test accuracy before, after and for the reference (``None``
        without matplotlib)."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        blocks = [(name, self.results.get(name)) for name in ("before", "after", "reference")]
        blocks = [(name, block) for name, block in blocks if block]
        splits = ["forget_acc", "retain_acc", "test_acc"]
        figure, axes = plt.subplots(figsize=(5, 3))
        width = 0.8 / max(1, len(blocks))
        for i, (name, block) in enumerate(blocks):
            values = [100.0 * float(block.get(k) or 0.0) for k in splits]
            axes.bar([j + i * width for j in range(len(splits))], values, width, label=name)
        axes.set_xticks([j + width * (len(blocks) - 1) / 2 for j in range(len(splits))], [k[:-4] for k in splits])
        axes.set_ylabel("accuracy (%)")
        axes.set_ylim(0, 100)
        axes.legend()
        figure.tight_layout()
        return figure

    def summary(self) -> str:
        """The before/after/reference table of the last fit, its status and the report's path."""
        results = self.results
        blocks = [("before", results.get("before")), ("after", results.get("after")),
                  ("reference", results.get("reference")), ("gap", results.get("gap"))]
        shown = [(name, block or {}) for name, block in blocks if block is not None or name in ("before", "after")]

        def cell(value: Any) -> str:
            return f"{value:>11.4f}" if isinstance(value, (int, float)) else f"{'-':>11}"

        status = results.get("status", "completed")
        if self.report is not None and self.report.get("failure"):
            failure = self.report["failure"]
            status += f" ({failure.get('reason')} at step {failure.get('step')})"
        lines = [f"UnlearningEvaluation: {status}, unlearning took {results.get('runtime_s', 0.0):.2f} s",
                 f"{'metric':<22}" + "".join(f"{name:>11}" for name, _ in shown)]
        for key in METRICS:
            lines.append(f"{key:<22}" + "".join(cell(block.get(key)) for _, block in shown))
        if (results.get("gap") or {}).get("avg_gap") is not None:
            lines.append(f"{'avg_gap':<22}{cell(results['gap']['avg_gap'])}")
        lines.append(f"Report: {self.report_path}" if self.report_path is not None else "Report: not written (report_path=None)")
        return "\n".join(lines)


def _global_seed() -> Optional[int]:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None



def _progress(trainer: L.Trainer, description: str) -> Optional[str]:
    """``description`` when the trainer shows a progress bar (on rank 0), else ``None``: the
    evaluation passes show a bar exactly when the fit does (and only on a terminal)."""
    return description if trainer.progress_bar_callback is not None and trainer.is_global_zero else None
