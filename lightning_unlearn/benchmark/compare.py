"""``lightning-unlearn compare``: the whole story on one config.

Train the original classifier on the full training set, unlearn it with several methods, retrain
from scratch without the forget set (the gold standard), and print the paper-style table: UA, RA,
TA and MIA-efficacy in percent, each with its distance to Retrain, the Avg. Gap to Retrain and
the run time of the unlearning itself. The config is described in
:mod:`lightning_unlearn.benchmark.config`.

Example::

    lightning-unlearn compare --config configs/quickstart.yaml --output results.json
    lightning-unlearn compare --config configs/quickstart.yaml --original.max_epochs=5
    lightning-unlearn compare quickstart            # a packaged preset, from anywhere
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from typing import Any, Optional

from lightning_unlearn.benchmark.config import DENSE, Config, build_parser, check_originals, load_config, resolve_config_args
from lightning_unlearn.benchmark.runner import (
    EpochSnapshots,
    RowRun,
    effective_spec,
    quiet_fit_warnings,
    reference_rows,
    row_topologies,
    run_command,
    run_row,
    topology_of,
    train_original,
    train_pipeline_original,
    trainer_options,
    with_shuffle_seed,
)
from lightning_unlearn.benchmark.table import audit_columns, describe_run, percent, print_table, table_row
from lightning_unlearn.metrics.evaluation import evaluate, evaluate_pass
from lightning_unlearn.models.network import copy_network
from lightning_unlearn.report import versions

#: The W&B project of runs that name none (instead of Lightning's ``lightning_logs``).
DEFAULT_WANDB_PROJECT = "lightning-unlearn"


def run_compare(
    config: Config,
    *,
    progress: bool = False,
    logger: Optional[str] = None,
    project: Optional[str] = None,
    group: Optional[str] = None,
) -> dict[str, Any]:
    """Runs the comparison.

    Trains the original (:class:`~lightning_unlearn.models.ImageClassifier`, whole training set),
    then every method in ``methods`` around a copy of it, Retrain first, each with
    :func:`~lightning_unlearn.benchmark.run_row`: its own ``Trainer`` and an
    :class:`~lightning_unlearn.callbacks.UnlearningEvaluation` callback (the retrained model as
    reference), after ``seed_everything(seed)``, so a row does not depend on the rows before it.
    Retrain's ``init_seed`` defaults to ``seed``.

    Args:
        config: a YAML path, a mapping with the same keys, or a parsed jsonargparse Namespace.
        progress: show a progress bar over the rows and Lightning's and the evaluation's bars in
            each fit (on stderr; ``lightning-unlearn compare`` shows them when stderr is a terminal).
        logger: ``"wandb"``: one W&B run per row (:func:`wandb_row_logger`): ``group`` the
            comparison, ``job_type`` the row, metrics, summary table, report and config artifacts.
        project: the W&B project (default: ``$WANDB_PROJECT``, else ``lightning-unlearn``).
        group: the W&B group of the rows (default: ``compare-<date>-<time>``).

    Returns:
        ``{"config", "forget", "original", "rows", "total_time_s", "versions"}``. Each row holds the
        row name, the registry ``method``, the ``class``, ``max_epochs``, ``init_args``, the four
        metrics in percent (2 decimals) under their evaluation keys (``unlearning_accuracy``,
        ``retain_acc``, ``test_acc``, ``mia_efficacy``), ``gap`` (``|x - Retrain|`` per metric,
        points), ``avg_gap`` (their mean), ``runtime_s`` (the unlearning fit without evaluation) and
        ``forget_acc``, and the audit columns (``mia_auc``: the best threshold attack's forget-vs-test
        AUC, ``mia_auc_attack``, ``mia_auc_gap``; the evaluation's ``"attacks"`` audit, computed from
        its own pass). The Retrain row's gaps are 0.

    Raises:
        ValueError: for an invalid config (unknown method, no Retrain row, bad init arguments),
            before anything is trained.
    """
    cfg, specs, original_spec = load_config(config)
    pipelines = check_originals(cfg.get("originals") or {}, specs)
    datamodule, network = cfg.data, cfg.model
    seed, mia_backend = int(cfg.seed), cfg.mia_backend
    options = trainer_options(cfg)
    references = reference_rows(specs)
    for name, pipeline in pipelines.items():
        if pipeline.pipeline == "omp" and pipeline.rewind_epoch > original_spec.max_epochs:
            raise ValueError(
                f"originals.{name}.rewind_epoch={pipeline.rewind_epoch} is after the dense original's last epoch"
                f" ({original_spec.max_epochs}): rewind to an epoch of its training (0: its initialisation)."
            )

    if logger not in (None, "none", "wandb"):
        raise ValueError(f"`logger` must be None or 'wandb', got {logger!r}.")
    data = {"class": type(datamodule).__name__, "forget": datamodule.forget.to_dict()}
    run_config = describe_run(cfg, data, network, original_spec, specs, pipelines, references)
    group = group or f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    original_metrics: Optional[dict[str, Optional[float]]]
    with quiet_fit_warnings(), tempfile.TemporaryDirectory(prefix="lightning_unlearn_compare_") as scratch:
        used = {spec.original for spec in specs.values()}
        untrained = copy_network(network) if pipelines else None
        rewinds = [p.rewind_epoch for name, p in pipelines.items() if p.pipeline == "omp" and name in used]
        snapshots = EpochSnapshots(rewinds, scratch)
        originals: dict[str, Any] = {}
        bar = _rows_bar(progress, len(specs) + int(DENSE in used or bool(rewinds)))
        if DENSE in used or rewinds:
            bar.set_description("original")
            originals[DENSE], original_time = train_original(
                network, datamodule, original_spec, seed, [snapshots] if rewinds else [], progress=progress, **options
            )
            original_pass = evaluate_pass(
                originals[DENSE],
                datamodule.evaluation_dataloaders(),
                mia_backend=mia_backend,
                progress="evaluating the original" if progress else None,
            )
            original_metrics = original_pass.metrics
            bar.update(1)
        for name, pipeline in pipelines.items():
            if name not in used:
                continue
            originals[name], elapsed = train_pipeline_original(
                pipeline,
                originals.get(DENSE),
                untrained,
                datamodule,
                original_spec,
                seed,
                snapshots.paths.get(pipeline.rewind_epoch),
                **options,
            )
            extra[name] = {
                **percent(evaluate(originals[name], datamodule, mia_backend=mia_backend)),
                "runtime_s": round(elapsed, 3),
            }
        if DENSE not in originals:  # every row unlearns a sparse original: the first one stands for "the original"
            first = next(name for name in pipelines if name in used)
            original_metrics, original_time = None, extra[first]["runtime_s"]

        order = [name for name in specs if references[name] is None] + [name for name in specs if references[name] is not None]
        runs: dict[str, RowRun] = {}
        for name in order:
            bar.set_description(name)
            spec = specs[name]
            reference_name = references[name]
            reference = runs[reference_name].model if reference_name is not None else None
            row_data = with_shuffle_seed(datamodule, spec.shuffle_seed)
            row_logger: Any = wandb_row_logger(name, group, project, run_config) if logger == "wandb" else False
            try:
                runs[name] = run_row(
                    effective_spec(spec, pipelines.get(spec.original), seed, original_spec),
                    originals[spec.original],
                    row_data,
                    seed,
                    reference=reference,
                    mia_backend=mia_backend,
                    audits="attacks",
                    progress=progress,
                    logger=row_logger,
                    run_config=run_config if row_logger else None,
                    **options,
                )
            finally:
                if row_logger:
                    row_logger.experiment.finish()
            bar.update(1)
        bar.close()

    audits = {name: (run.evaluated.audit or {}).get("after") for name, run in runs.items()}
    ordered = [name for name in order if references[name] is None][:1] + [name for name in specs if name != order[0]]
    rows = []
    for name in ordered:
        reference_name = references[name] or name
        row = table_row(
            name,
            specs[name],
            runs[name].after,
            runs[reference_name].after,
            runs[name].runtime_s,
            audits[name],
            audits[reference_name],
        )
        if pipelines:
            row.update(original=specs[name].original, reference=reference_name)
        rows.append(row)
    if pipelines:
        topologies = {name: topology_of(run.model, run.method.trainer.callbacks) for name, run in runs.items()}
        topology = row_topologies(specs, references, originals, topologies)
        for name, values in topology.items():  # fit-start topology work (un-pruning), which the row's RTE does not time
            values["topology_time_s"] = round(
                sum(float(getattr(cb, "topology_time_s", 0.0) or 0.0) for cb in runs[name].method.trainer.callbacks), 3
            )
        extra = {"originals": extra, "topology": topology}
    original_row = (
        {
            **percent(original_metrics),
            "runtime_s": round(original_time, 3),
            **{k: v for k, v in audit_columns(original_pass.audit).items() if k == "mia_auc"},
        }
        if original_metrics is not None
        else extra["originals"][first]
    )
    return {
        "config": run_config,
        "forget": datamodule.forget_summary(),
        "original": original_row,
        "rows": rows,
        **extra,
        "total_time_s": round(time.perf_counter() - start, 3),
        "versions": versions(),
    }


def _rows_bar(progress: bool, total: int) -> Any:
    """A tqdm bar over the rows (the original first); quiet unless ``progress`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="row", disable=None if progress else True, dynamic_ncols=True, desc="compare")


def wandb_row_logger(row: str, group: str, project: Optional[str], config: dict[str, Any]) -> Any:
    """The ``WandbLogger`` of one compare row: ``group`` the comparison, ``job_type`` and name the
    row, project ``project`` (default ``$WANDB_PROJECT``, else ``lightning-unlearn``), the
    comparison's configuration as the run config."""
    import os

    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT,
        group=group,
        job_type=row,
        name=f"{group}/{row}",
        config={"compare": config, "row": row},
        save_dir=os.environ.get("WANDB_DIR", "."),
    )


def main(args: Optional[Sequence[str]] = None) -> None:
    """``lightning-unlearn compare``: parses the command line, runs :func:`run_compare`, prints the
    table and writes ``--output`` when given.

    ``--output`` is checked before anything trains (a folder, a path under a file or an
    unwritable folder is refused with the fix) and written atomically (a temporary file in the
    same folder, then ``os.replace``): a fault never leaves a half-written file nor destroys an
    earlier one.

    Args:
        args: the command line after ``compare`` (default: ``sys.argv[2:]``).

    Use :func:`run_compare` to get the results as a dict; this function returns ``None`` so that
    the console script exits with status 0.
    """
    import sys

    argv = list(sys.argv[2:] if args is None else args)
    if argv and not argv[0].startswith("-"):  # `compare quickstart`: a preset name or a path
        argv = ["--config", *argv]
    parser = build_parser()
    cfg = parser.parse_args(resolve_config_args(argv))
    run_command(
        parser,
        cfg.output,
        lambda: run_compare(cfg, progress=sys.stderr.isatty(), logger=cfg.logger, project=cfg.project, group=cfg.group),
        print_table,
    )
