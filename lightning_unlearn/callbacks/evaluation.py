"""`UnlearningEvaluation`: measures forgetting, utility and privacy before and after, logs and reports."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Subset

from lightning_unlearn.data.access import convert_input, require_unlearning_data
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.metrics.audit import quantization_audit, relearn_audit, representation_audit, resolve_audits
from lightning_unlearn.metrics.evaluation import EvaluationPass, evaluate_pass
from lightning_unlearn.metrics.forgetting_check import forgetting_check
from lightning_unlearn.metrics.functional import avg_gap, metric_gaps
from lightning_unlearn.metrics.keys import METRICS, audit_log_key
from lightning_unlearn.metrics.topology import topology_report
from lightning_unlearn.models.divergence import DivergenceGuard
from lightning_unlearn.models.network import check_logits, copy_network, network_of, sample_like
from lightning_unlearn.models.weights import weights_sha256
from lightning_unlearn.registry import register
from lightning_unlearn.report import build_report, json_safe, read_report, write_report
from lightning_unlearn.report.audit import audit_summary, summary_lines
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
from lightning_unlearn.validation import (
    check_bool,
    check_choice,
    check_float,
    check_fraction,
    check_int,
    check_optional_path,
    check_output_path,
    check_str,
)


@register(
    "evaluation",
    kind="callback",
    cost="one inference pass over D_f, D_r and D_t before and after fit",
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

    Nothing silently unforgotten: at fit end,
    :func:`~lightning_unlearn.metrics.forgetting_check.forgetting_check` compares the original's and
    the unlearned model's figures (class-wise: forget accuracy still at least half the original's;
    random: at least half of the original's forget-minus-test accuracy margin left). When the forget
    set is still classified like training data it warns with the figures and the remedy, and the
    finding (:meth:`ForgettingFinding.as_dict`) is in ``results["forgetting_check"]`` and the report's
    ``metrics.forgetting_check`` (absent from the report, ``None`` in ``results``, when forgotten).

    **Audits** ("is it really forgotten?", ``audits=``; README has what each number means and
    when not to trust it). ``"attacks"``: the threshold membership attacks (loss, confidence,
    entropy, modified entropy; AUC and TPR at 1 % and 0.1 % FPR, forget-vs-test and
    retain-vs-test), the SSD / Bad Teacher entropy attack and SCRUB's loss attack, from the
    evaluation pass itself (no extra pass). ``"margins"``: per-example margins kept
    (``callback.margins``), and the mean per-example margin gap to the reference model.
    ``"representation"``: linear CKA of penultimate features (``feature_layer``) with the
    reference and the original, a linear probe and a k-NN trained on retained data that try to
    recover the forget labels. ``"relearn"``: the relearning attack on a copy of the model and of
    the reference. ``"quantization"``: int8 and int4 weights, forget accuracy and attacks again.
    ``"plots"``: PNG figures beside the report (and W&B images). Presets: ``"standard"`` =
    attacks + margins, ``"full"`` = everything. Every audit quantity is logged as
    ``{prefix}/audit/<quantity>_higher_<meaning>`` (the sign convention in the name) and written
    to the report's ``audit`` section with its ``summary``: each quantity beside Retrain's and
    flagged when it differs by more than the noise floor (a reseeded Retrain's distance to
    Retrain, ``reseeded_reference=``, or twice the sampling standard error). With a pruning
    callback the summary leads with topology and per-example numbers.

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
        audits: ``None``, a preset (``"standard"``, ``"full"``), an audit name (``"attacks"``,
            ``"margins"``, ``"representation"``, ``"relearn"``, ``"quantization"``, ``"plots"``)
            or a list of them.
        reseeded_reference: Retrain from other seeds (a model or its report's path): its distance
            to the reference is each audit's noise floor.
        feature_layer: the representation audit's layer (default: the input of the last linear
            layer; see :mod:`lightning_unlearn.functional.features`).
        representation_samples: examples of D_f and D_t (each) and of D_r for the probes.
        relearn_steps: SGD steps of the relearning attack.
        relearn_lr: its learning rate (momentum 0.9).
        relearn_fraction: the fraction of D_f the attacker relearns on (at least one example);
            forget accuracy is measured on the rest.
        relearn_data: ``"forget"`` (the attack batches are those forget examples) or
            ``"retain+forget"`` (retain batches, each with those forget examples added).
        quantization_bits: the integer widths of the quantisation attack.

    Attributes:
        run_config: the resolved configuration of the run, embedded in the report's recipe (the
            ``lightning-unlearn`` CLI sets it); ``None`` otherwise.
        audit: the report's ``audit`` section of the last fit (``None`` without audits).
        margins: with the ``margins`` or ``attacks`` audit, ``{"before" | "after" | "reference" |
            "reseeded": {split: (N,) margins}}`` (CPU), what a model population saves.
        figures: the PNG files written by the ``plots`` audit, by name.

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
        audits: Optional[Union[str, list[str]]] = None,
        reseeded_reference: Optional[Union[nn.Module, str]] = None,
        feature_layer: Optional[str] = None,
        representation_samples: int = 2000,
        relearn_steps: int = 10,
        relearn_lr: float = 0.01,
        relearn_fraction: float = 0.1,
        relearn_data: Literal["forget", "retain+forget"] = "forget",
        quantization_bits: Sequence[int] = (8, 4),
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
        self.every_n_epochs = (
            None
            if every_n_epochs is None
            else check_int(every_n_epochs, "every_n_epochs", minimum=1, hint="e.g. 1 to measure after every epoch, or None")
        )
        self.verbose = check_bool(verbose, "verbose")
        self.audits = resolve_audits(audits)
        if reseeded_reference is not None and not isinstance(reseeded_reference, nn.Module):
            reseeded_reference = check_optional_path(
                reseeded_reference, "reseeded_reference", "a model (Retrain from other seeds) or the path of its report"
            )
        self.reseeded_reference = reseeded_reference
        if feature_layer is not None:
            check_str(feature_layer, "feature_layer", "a submodule name, e.g. 'features' or 'fc:input'")
        self.feature_layer = feature_layer
        self.representation_samples = check_int(
            representation_samples,
            "representation_samples",
            minimum=2,
            hint="examples per split for CKA and the probes, e.g. 2000",
        )
        self.relearn_steps = check_int(relearn_steps, "relearn_steps", minimum=0, hint="SGD steps, e.g. 20")
        self.relearn_lr = check_float(relearn_lr, "relearn_lr", minimum=0.0, open_minimum=True, hint="e.g. 0.01")
        self.relearn_fraction = check_fraction(
            relearn_fraction, "relearn_fraction", allow_one=False, hint="the share of D_f the attacker relearns on, e.g. 0.1"
        )
        self.relearn_data = check_choice(relearn_data, "relearn_data", ("forget", "retain+forget"))
        if isinstance(quantization_bits, (str, int)) or not quantization_bits:
            raise ValueError(f"`quantization_bits` must be a list of integer widths, got {quantization_bits!r}: e.g. [8, 4].")
        self.quantization_bits = tuple(
            check_int(b, "quantization_bits", minimum=2, maximum=16, hint="e.g. [8, 4]") for b in quantization_bits
        )
        self.audit: Optional[dict[str, Any]] = None
        self.margins: dict[str, dict[str, torch.Tensor]] = {}
        #: The audit's figures written beside the report (name -> PNG path), logged to W&B as images.
        self.figures: dict[str, str] = {}
        self._audit_blocks: dict[str, Optional[dict[str, Any]]] = {}
        self._passes: dict[str, EvaluationPass] = {}
        self._original_copy: Optional[nn.Module] = None
        self._reference_model: Optional[nn.Module] = None
        self._reseeded_model: Optional[nn.Module] = None
        self._reseeded_metrics: Optional[dict[str, Any]] = None
        self.run_config: Optional[dict[str, Any]] = None
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
        if self.reference_report is not None:
            self._read_reference_report(self.reference_report)  # a bad report is refused before any weight changes
        reseeded = None
        if isinstance(self.reseeded_reference, nn.Module):
            reseeded = copy_network(self.reseeded_reference).to(device)
            if check_logits(reseeded, sample_like(reseeded, x[:2]), data.num_classes, "reseeded_reference") != classes:
                raise ValueError(
                    "`reseeded_reference` must return as many logits as the model (a Retrain of the same architecture)."
                )
        elif self.reseeded_reference is not None:
            self._reseeded_metrics, self._audit_blocks["reseeded"] = self._read_report_blocks(
                self.reseeded_reference, "reseeded_reference"
            )
        guard = getattr(pl_module, "divergence_guard", None)
        self._own_guard = not isinstance(guard, DivergenceGuard)
        self._guard = DivergenceGuard() if self._own_guard else guard
        self.results, self.report, self._runtime, self._start = {}, None, None, None
        original = getattr(pl_module, "original_model", None)
        original = original if isinstance(original, nn.Module) else network
        self._sha256_before = weights_sha256(original)
        self._recipe = {"method": method_recipe(pl_module), "data": data_recipe(data)}
        self.audit, self.margins, self.figures, self._passes = None, {}, {}, {}
        self._audit_blocks = {k: v for k, v in self._audit_blocks.items() if k == "reseeded" and self._reseeded_metrics}
        if self.audits and self.reference_report is not None and reference is None:
            self._audit_blocks["reference"] = self._read_report_blocks(self.reference_report, "reference_report")[1]
        if {"representation", "relearn"} & set(self.audits) and not isinstance(
            getattr(pl_module, "original_model", None), nn.Module
        ):
            self._original_copy = copy_network(original)  # the original, before any callback changes a weight
        self._reference_model, self._reseeded_model = reference, reseeded
        if trainer.ckpt_path is not None:
            return  # resuming: the measurements of the interrupted run come back with this callback's state
        on_device = original if next(original.parameters()).device == device else copy_network(original).to(device)
        self._measure_before(trainer, on_device, device)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "before" not in self.results:  # resumed from a checkpoint taken without this callback
            device, original = pl_module.device, getattr(pl_module, "original_model", None)
            if isinstance(original, nn.Module):
                self._measure_before(trainer, copy_network(original).to(device), device)
            else:  # the module's own network, in the fit's precision
                self._measure_before(trainer, network_of(pl_module), device, lambda x: convert_input(trainer, x))
        self._recipe.update(
            optimizers=optimizers_recipe(trainer),
            lr_schedulers=schedulers_recipe(trainer),
            callbacks=callbacks_recipe(trainer.callbacks),  # type: ignore[attr-defined]
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
        after = self._evaluate(trainer, pl_module, strict=not diverged, audited=bool(self.audits))
        status = "diverged" if diverged else "completed"
        record = self._guard.record if diverged and self._guard is not None else None
        failure = dict(record) if record is not None else None
        self._finish(trainer, pl_module, after, status, failure)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if "before" not in self.results or self.report is not None:
            return  # nothing was measured yet (a refused input), or the report exists already
        failure = {
            "reason": f"{type(exception).__name__}: {str(exception).strip()[:300]}",
            "step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch),
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
            "before": self.results.get("before"),
            "reference": self.results.get("reference"),
            "sha256_before": self._sha256_before,
            "runtime_s": elapsed,
            "audit_blocks": {k: v for k, v in self._audit_blocks.items() if v is not None},
            "reseeded": self._reseeded_metrics,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("before") is not None:
            self.results = {"before": state_dict["before"], "reference": state_dict.get("reference")}
        if state_dict.get("sha256_before") is not None:
            self._sha256_before = state_dict["sha256_before"]
        self._elapsed = float(state_dict.get("runtime_s") or 0.0)
        if state_dict.get("audit_blocks"):
            self._audit_blocks.update(state_dict["audit_blocks"])
        if state_dict.get("reseeded") is not None:
            self._reseeded_metrics = state_dict["reseeded"]

    # ------------------------------------------------------------------ helpers
    def _data(self, trainer: L.Trainer) -> UnlearningDataModule:
        return require_unlearning_data(
            trainer, "UnlearningEvaluation", self.datamodule, "or pass `UnlearningEvaluation(datamodule=...)`"
        )

    def _diverged(self) -> bool:
        return self._guard is not None and self._guard.diverged

    def _read_reference_report(self, path: str) -> dict[str, float]:
        report = read_report(path, "reference_report")
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

    def _measure_before(self, trainer: L.Trainer, original: nn.Module, device: Any, convert: Any = None) -> None:
        """The "before" pass of ``original`` (on ``device``), the reference's (its model's pass, or
        its report's ``metrics.after``) and the reseeded reference's, into :attr:`results`."""
        data, distributed = self._data(trainer), trainer.world_size > 1
        before = self._pass(
            "before",
            original,
            data,
            device,
            distributed,
            convert,
            "model",
            progress=_progress(trainer, "evaluating the original"),
        ).metrics
        reference: Optional[Mapping[str, Optional[float]]] = None
        if self._reference_model is not None:
            progress = _progress(trainer, "evaluating the reference")
            reference = self._pass(
                "reference", self._reference_model, data, device, distributed, None, "reference", progress=progress
            ).metrics
        elif self.reference_report is not None:
            reference = self._read_reference_report(self.reference_report)
        if self._reseeded_model is not None:
            progress = _progress(trainer, "evaluating the reseeded reference")
            self._reseeded_metrics = self._pass(
                "reseeded", self._reseeded_model, data, device, distributed, None, "reseeded_reference", progress=progress
            ).metrics
        self.results = {"before": before, "reference": reference}

    def _pass(
        self,
        role: str,
        model: nn.Module,
        data: UnlearningDataModule,
        device: Any,
        distributed: bool,
        convert: Any,
        name: str,
        strict: bool = True,
        progress: Optional[str] = None,
    ) -> EvaluationPass:
        """One evaluation pass of ``model`` (the role ``before``, ``after``, ``reference`` or
        ``reseeded``), with the attacks when audits are on; keeps its audit block and margins;
        a progress bar under ``progress`` (see :func:`_progress`)."""
        audited = bool(self.audits)
        result = evaluate_pass(
            model,
            data.evaluation_dataloaders(),
            device,
            self.mia_backend,
            distributed=distributed,
            convert_input=convert,
            name=name,
            strict=strict,
            attacks=audited,
            keep_samples=role == "after" and "plots" in self.audits,
            progress=progress,
        )
        if audited:
            self._passes[role] = result
            self._audit_blocks[role] = dict(result.audit) if result.audit is not None else None
            if result.margins is not None:
                self.margins[role] = result.margins
        return result

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, strict: bool, audited: bool = False) -> dict[str, Any]:
        if trainer.world_size > 1:
            _broadcast_buffers(network_of(pl_module))
        progress = _progress(trainer, "evaluating after unlearning")
        if audited:
            return self._pass(
                "after",
                network_of(pl_module),
                self._data(trainer),
                pl_module.device,
                trainer.world_size > 1,
                lambda x: convert_input(trainer, x),
                "model (after unlearning)",
                strict,
                progress,
            ).metrics
        return evaluate_pass(
            network_of(pl_module),
            self._data(trainer).evaluation_dataloaders(),
            pl_module.device,
            self.mia_backend,
            distributed=trainer.world_size > 1,
            convert_input=lambda x: convert_input(trainer, x),
            name="model (after unlearning)",
            strict=strict,
            attacks=False,
            progress=progress,
        ).metrics

    def _read_report_blocks(self, path: str, name: str) -> tuple[dict[str, float], Optional[dict[str, Any]]]:
        """``(metrics.after, audit.after)`` of a completed run's report (the audit block is
        ``None`` when that run had no audits)."""
        report = read_report(path, name)
        if report.get("status", "completed") != "completed":
            raise ValueError(
                f"`{name}`={path!r} is the report of a run that {report['status']}: use the report of a completed Retrain run."
            )
        after = (report.get("metrics") or {}).get("after") or {}
        bad = [k for k in METRICS if not isinstance(after.get(k), (int, float)) or not 0.0 <= after[k] <= 1.0]
        if bad:
            raise ValueError(
                f"`{name}`={path!r} lacks valid metrics.after values for {bad}: use the report of a completed Retrain run."
            )
        audit = report.get("audit") if isinstance(report.get("audit"), dict) else None
        block = audit.get("after") if audit is not None and isinstance(audit.get("after"), dict) else None
        return {k: float(after[k]) for k in METRICS}, block

    # ------------------------------------------------------------------ audits beyond the pass
    def _run_audits(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The fit-end audits that need the models themselves: per-example margin gaps,
        representation, relearning, quantisation. Each model's numbers go to its audit block."""
        data, device = self._data(trainer), pl_module.device
        model = network_of(pl_module)
        convert = lambda x: convert_input(trainer, x)  # noqa: E731
        blocks = self._audit_blocks
        reference = self._reference_model
        reseeded = self._reseeded_model
        if self.reference is not None and reference is None:  # resumed: the reference was not moved yet
            reference = self._reference_model = copy_network(self.reference).to(device)
        if "margins" in self.audits and reference is not None:
            if "reference" not in self.margins:  # resumed: measure the reference's margins again
                self._pass("reference", reference, data, device, trainer.world_size > 1, None, "reference")
            ref_margins = self.margins["reference"]
            for role in ("after", "reseeded"):
                block = blocks.get(role)
                if role in self.margins and block is not None:
                    for split in ("forget", "test"):
                        gap = (self.margins[role][split].double() - ref_margins[split].double()).abs().mean()
                        block[f"per_example/margin_gap/{split}"] = float(gap)
            reference_block = blocks.get("reference")
            if reference_block is not None:
                reference_block.update({"per_example/margin_gap/forget": 0.0, "per_example/margin_gap/test": 0.0})
        original = getattr(pl_module, "original_model", None)
        original = original if isinstance(original, nn.Module) else self._original_copy
        models = {"after": model}
        if reference is not None:
            models["reference"] = reference
        if reseeded is not None:
            models["reseeded"] = reseeded
        if "representation" in self.audits:
            loaders = self._representation_loaders(data)
            named = dict(models)
            if original is not None:
                named["original"] = copy_network(original).to(device)
            results = representation_audit(named, loaders, device, layer=self.feature_layer, convert_input=convert)
            for role in models:
                block = blocks.get(role)
                if block is not None:
                    block.update(results[role])
        if "relearn" in self.audits:
            attack, held_out = self._relearn_data(data)
            results = relearn_audit(
                models, attack, held_out, device, steps=self.relearn_steps, lr=self.relearn_lr, convert_input=convert
            )
            for role in models:
                block = blocks.get(role)
                if block is not None:
                    block.update(results[role])
        if "quantization" in self.audits:
            for role, network in models.items():
                block = blocks.get(role)
                if block is not None and role in self._passes:
                    block.update(
                        quantization_audit(
                            network,
                            self._passes[role],
                            data.evaluation_dataloaders(),
                            device,
                            bits=self.quantization_bits,
                            mia_backend=self.mia_backend,
                            distributed=trainer.world_size > 1,
                            convert_input=convert if role == "after" else None,
                            name=role,
                        )
                    )

    def _subset_loader(self, data: UnlearningDataModule, dataset: Any, positions: torch.Tensor, batch_size: int) -> DataLoader:
        return data.make_loader(Subset(dataset, positions.tolist()), batch_size, evaluation=True)

    def _representation_loaders(self, data: UnlearningDataModule) -> dict[str, DataLoader]:
        """Deterministic subsets: the first ``representation_samples`` of D_f; D_t split in two
        halves by a seeded permutation (A joins the probe's training data so every class is
        represented, B is the probe's held-out control and, with A, the CKA test examples); a
        seeded random ``representation_samples`` of D_r for the probes."""
        n, batch = self.representation_samples, data.eval_batch_size
        generator = torch.Generator().manual_seed(0)
        forget, retain, test = (
            data.split("forget", eval_transforms=True),
            data.split("retain", eval_transforms=True),
            data.test_set,
        )
        if test is None:
            raise ValueError("The datamodule has no test set: the representation audit needs held-out data.")
        order = torch.randperm(len(test), generator=generator)  # type: ignore[arg-type]
        half = max(1, len(test) // 2)  # type: ignore[arg-type]
        probe_a, probe_b = order[:half].sort().values, order[half:].sort().values
        if probe_b.numel() == 0:
            probe_b = probe_a
        retain_pick = torch.randperm(len(retain), generator=generator)[:n].sort().values  # type: ignore[arg-type]
        train: torch.utils.data.ConcatDataset[Any] = torch.utils.data.ConcatDataset(
            [Subset(retain, retain_pick.tolist()), Subset(test, probe_a[:n].tolist())]
        )
        return {
            "forget": self._subset_loader(data, forget, torch.arange(min(n, len(forget))), batch),  # type: ignore[arg-type]
            "test": self._subset_loader(data, test, torch.arange(min(n, len(test))), batch),  # type: ignore[arg-type]
            "probe_train": data.make_loader(train, batch, evaluation=True),
            "probe_test": self._subset_loader(data, test, probe_b[:n], batch),
        }

    def _relearn_data(self, data: UnlearningDataModule) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], DataLoader]:
        """The attacker's batches and the held-out rest of D_f (seeded, identical for every model)."""
        forget = data.split("forget", eval_transforms=True)
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(forget), generator=generator)  # type: ignore[arg-type]
        count = max(1, math.ceil(self.relearn_fraction * len(forget)))  # type: ignore[arg-type]
        attack_pos, held_pos = order[:count].sort().values, order[count:].sort().values
        if held_pos.numel() == 0:
            held_pos = attack_pos
        batch = data.batch_size
        attack = [tuple(t for t in b[:2]) for b in self._subset_loader(data, forget, attack_pos, batch)]
        if self.relearn_data == "retain+forget":
            retain = data.split("retain", eval_transforms=True)
            picks = torch.randperm(len(retain), generator=generator)[: batch * min(self.relearn_steps or 1, 8)]  # type: ignore[arg-type]
            x_f = torch.cat([x for x, _ in attack])
            y_f = torch.cat([torch.as_tensor(y) for _, y in attack])
            attack = [
                (torch.cat([x, x_f]), torch.cat([torch.as_tensor(y), y_f]))
                for x, y in self._subset_loader(data, retain, picks.sort().values, batch)
            ]
        return attack, self._subset_loader(data, forget, held_pos, data.eval_batch_size)

    def _current_recipe(self, trainer: L.Trainer, pl_module: L.LightningModule, sha256_after: Optional[str]) -> dict[str, Any]:
        return redact_indices(
            {
                "method": self._recipe.get("method"),
                "optimizers": self._recipe.get("optimizers", []),
                "lr_schedulers": self._recipe.get("lr_schedulers", []),
                "callbacks": self._recipe.get("callbacks", []),
                "trainer": trainer_recipe(trainer),
                "data": self._recipe.get("data"),
                "model": model_recipe(network_of(pl_module), self._sha256_before, sha256_after),
                "config": self.run_config,
            }
        )

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

    def _finish(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        after: Optional[dict[str, Any]],
        status: str,
        failure: Optional[dict[str, Any]],
    ) -> None:
        reference = self.results.get("reference")
        gap: Optional[dict[str, Optional[float]]] = None
        if reference is not None and after is not None:
            gap = dict.fromkeys(METRICS)
            gap.update(
                metric_gaps(
                    {k: v for k, v in after.items() if v is not None}, reference, [k for k in METRICS if after.get(k) is not None]
                )
            )
            complete = all(after.get(k) is not None for k in METRICS)
            gap["avg_gap"] = avg_gap(after, reference) if complete else None
        runtime = (
            self._runtime
            if self._runtime is not None
            else self._elapsed + time.perf_counter() - (self._start or time.perf_counter())
        )
        topology = topology_report(trainer.callbacks)  # type: ignore[attr-defined]  # sparse models: sparsity and mask IoU vs the reference
        data = self._data(trainer)
        finding = (
            forgetting_check(self.results["before"], after, classwise=bool(data.forget.classes))
            if status == "completed" and after is not None
            else None
        )
        if finding is not None:
            rank_zero_warn(finding.message)
        self.results.update(
            after=after,
            gap=gap,
            runtime_s=runtime,
            topology=topology,
            status=status,
            forgetting_check=None if finding is None else finding.as_dict(),
        )
        self.audit = self._build_audit(trainer, pl_module, after, topology) if self.audits else None
        recipe = self._current_recipe(trainer, pl_module, weights_sha256(network_of(pl_module)))
        self.report = build_report(
            method=type(pl_module).__name__,
            hyperparameters=self._hyperparameters(pl_module),
            forget=data.forget_summary(),
            before=self.results["before"],
            after=after,
            reference=reference,
            gap=gap,
            runtime_s=runtime,
            seed=_global_seed(),
            status=status,
            failure=failure,
            recipe=recipe,
            audit=self.audit,
        )
        if topology is not None:
            self.report["metrics"]["topology"] = topology
        if finding is not None:
            self.report["metrics"]["forgetting_check"] = self.results["forgetting_check"]
        for callback in trainer.callbacks:  # type: ignore[attr-defined]  # sections other callbacks add (e.g. UnlearningHardness: "hardness")
            section = getattr(callback, "report_section", None)
            section = section() if callable(section) else None
            if section is not None:
                self.report["metrics"][section[0]] = section[1]
        if self.report_path is not None and trainer.is_global_zero:
            write_report(self.report_path, self.report)
        flat = self.flat_metrics()
        self._publish(trainer, flat)
        self._log(trainer, flat, recipe, status)
        if self.verbose:
            rank_zero_info(self.summary())

    def _build_audit(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        after: Optional[dict[str, Any]],
        topology: Optional[dict[str, Any]],
    ) -> dict[str, Any]:
        """The report's ``audit`` section (see the class docstring)."""
        blocks = self._audit_blocks
        if after is not None and blocks.get("after") is not None:
            self._run_audits(trainer, pl_module)
        counts = (
            self._passes["after"].counts
            if "after" in self._passes
            else {
                "forget": len(self._data(trainer).forget_indices),
                "retain": len(self._data(trainer).retain_indices),
                "test": len(self._data(trainer).test_set),  # type: ignore[arg-type]
            }
        )
        topo = {f"topology/{k}": v for k, v in (topology or {}).items() if isinstance(v, float)}
        reference = self.results.get("reference")
        flat_after = {**(after or {}), **(blocks.get("after") or {}), **topo}
        flat_reference = None if reference is None else {**reference, **(blocks.get("reference") or {})}
        flat_reseeded = None
        if self._reseeded_metrics is not None:
            flat_reseeded = {**self._reseeded_metrics, **(blocks.get("reseeded") or {})}
        summary = audit_summary(flat_after, flat_reference, flat_reseeded, counts, sparse=topology is not None)
        audit: dict[str, Any] = {
            "audits": list(self.audits),
            "settings": {
                "fprs": [0.01, 0.001],
                "feature_layer": self.feature_layer,
                "representation_samples": self.representation_samples,
                "relearn": {
                    "steps": self.relearn_steps,
                    "lr": self.relearn_lr,
                    "fraction": self.relearn_fraction,
                    "data": self.relearn_data,
                },
                "quantization_bits": list(self.quantization_bits),
                "noise_floor": "reseeded Retrain and sampling" if flat_reseeded is not None else "sampling",
            },
            "counts": dict(counts),
            "before": blocks.get("before"),
            "after": blocks.get("after"),
            "reference": blocks.get("reference"),
            "reseeded": flat_reseeded,
            "summary": summary,
            "figures": {},
        }
        if "plots" in self.audits and trainer.is_global_zero:
            audit["figures"] = self._write_figures(trainer, after)
        return audit

    def _write_figures(self, trainer: L.Trainer, after: Optional[dict[str, Any]]) -> dict[str, str]:
        if self.report_path is not None:
            stem = Path(self.report_path).with_suffix("")
        else:
            stem = Path(trainer.default_root_dir) / "unlearn_audit" / "audit"
        try:
            from lightning_unlearn.report.figures import write_figures

            written = write_figures(
                stem,
                samples=self._passes["after"].samples if "after" in self._passes else None,
                margins={role: m for role, m in self.margins.items() if role in ("after", "reference", "before")},
                metrics={"before": self.results.get("before"), "after": after, "reference": self.results.get("reference")},
                title=f"{self.log_prefix}: audit of the unlearned model",
            )
        except ImportError:
            rank_zero_warn(
                "UnlearningEvaluation(audits=[..., 'plots']) needs matplotlib: `pip install matplotlib`;"
                " the figures were skipped."
            )
            return {}
        self.figures = {name: str(path) for name, path in written.items()}
        return dict(self.figures)

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
        if self.audit is not None:
            for role, block in (("", self.audit.get("after")), ("reference/", self.audit.get("reference"))):
                for quantity, value in (block or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        key = audit_log_key(p, quantity)
                        out[key.replace(f"{p}/audit/", f"{p}/audit/{role}", 1)] = value
        return {k: v for k, v in out.items() if v is not None}

    def _log(self, trainer: L.Trainer, metrics: dict[str, float], recipe: dict[str, Any], status: str) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.log_hyperparams({f"{self.log_prefix}/recipe": recipe, f"{self.log_prefix}/status": status})
            if type(logger).__name__ == "WandbLogger":
                wandb_logger: Any = logger  # a WandbLogger (not imported: wandb is optional)
                rows = [
                    [
                        k,
                        (self.results["before"] or {}).get(k),
                        (self.results["after"] or {}).get(k),
                        (self.results["reference"] or {}).get(k),
                        (self.results["gap"] or {}).get(k),
                    ]
                    for k in METRICS
                ]
                wandb_logger.log_table(
                    key=f"{self.log_prefix}/summary", columns=["metric", "before", "after", "reference", "gap"], data=rows
                )
                if self.audit is not None:
                    columns = ["quantity", "meaning", "value", "reference", "difference", "noise_floor", "verdict"]
                    wandb_logger.log_table(
                        key=f"{self.log_prefix}/audit_summary",
                        columns=columns,
                        data=[[entry[c] for c in columns] for entry in self.audit["summary"]],
                    )
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

        if self.report is None:
            raise RuntimeError("UnlearningEvaluation logs its W&B extras only once the report is built.")
        run = logger.experiment
        with tempfile.TemporaryDirectory() as folder:
            report = os.path.join(folder, "unlearning_report.json")
            write_report(report, self.report)
            artifact = wandb.Artifact(
                f"report-{run.id}", type="unlearning-report", metadata={"status": self.results.get("status")}
            )
            artifact.add_file(report)
            run.log_artifact(artifact)
            if self.run_config is not None:
                config = os.path.join(folder, "config.yaml")
                with open(config, "w") as handle:
                    yaml.safe_dump(json_safe(self.run_config), handle, sort_keys=False)
                artifact = wandb.Artifact(f"config-{run.id}", type="config")
                artifact.add_file(config)
                run.log_artifact(artifact)
        for name, figure in self.figures.items():  # the audit's pictures (audits=[..., "plots"])
            logger.log_image(key=f"{self.log_prefix}/audit/figures/{name}", images=[figure])
        chart = None if "accuracy" in self.figures else self._accuracy_figure()
        if chart is not None:
            logger.log_image(key=f"{self.log_prefix}/figures/accuracy", images=[chart])
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
        blocks = [(name, block) for name in ("before", "after", "reference") if (block := self.results.get(name))]
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
        blocks = [
            ("before", results.get("before")),
            ("after", results.get("after")),
            ("reference", results.get("reference")),
            ("gap", results.get("gap")),
        ]
        shown = [(name, block or {}) for name, block in blocks if block is not None or name in ("before", "after")]

        def cell(value: Any) -> str:
            return f"{value:>11.4f}" if isinstance(value, (int, float)) else f"{'-':>11}"

        status = results.get("status", "completed")
        if self.report is not None and self.report.get("failure"):
            failure = self.report["failure"]
            status += f" ({failure.get('reason')} at step {failure.get('step')})"
        lines = [
            f"UnlearningEvaluation: {status}, unlearning took {results.get('runtime_s', 0.0):.2f} s",
            f"{'metric':<22}" + "".join(f"{name:>11}" for name, _ in shown),
        ]
        for key in METRICS:
            lines.append(f"{key:<22}" + "".join(cell(block.get(key)) for _, block in shown))
        if (results.get("gap") or {}).get("avg_gap") is not None:
            lines.append(f"{'avg_gap':<22}{cell(results['gap']['avg_gap'])}")
        if self.audit is not None:
            out_of_line = sum(1 for e in self.audit["summary"] if e["verdict"].startswith("out of line"))
            lines.append(
                f"Audit ({', '.join(self.audit['audits'])}): {out_of_line} of {len(self.audit['summary'])}"
                " quantities out of line with Retrain"
            )
            lines += summary_lines(self.audit["summary"])
        lines.append(f"Report: {self.report_path}" if self.report_path is not None else "Report: not written (report_path=None)")
        return "\n".join(lines)


def _broadcast_buffers(network: nn.Module) -> None:
    """Rank 0's buffers on every rank. DDP keeps parameters equal but not BatchNorm statistics:
    each rank updates them from its own last batches, so without this each rank would evaluate
    its share of the data with a slightly different model (the one ``ddp_spawn`` returns is rank
    0's)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    with torch.no_grad():
        for buffer in network.buffers():
            torch.distributed.broadcast(buffer, src=0)


def _global_seed() -> Optional[int]:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None


def _progress(trainer: L.Trainer, description: str) -> Optional[str]:
    """``description`` when the trainer shows a progress bar (on rank 0), else ``None``: the
    evaluation passes show a bar exactly when the fit does (and only on a terminal)."""
    return description if trainer.progress_bar_callback is not None and trainer.is_global_zero else None
