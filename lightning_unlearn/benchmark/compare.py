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

import logging
import time
from dataclasses import asdict
from typing import Any, Optional, Sequence

from lightning_unlearn.benchmark.config import REFERENCE, Config, build_parser, load_config, resolve_config_args
from lightning_unlearn.benchmark.runner import RowRun, quiet_fit_warnings, run_row, train_original, trainer_options
from lightning_unlearn.benchmark.table import percent, print_table, table_row
from lightning_unlearn.metrics.evaluation import evaluate
from lightning_unlearn.report import json_safe, versions, write_json

#: The W&B project of runs that name none (instead of Lightning's ``lightning_logs``).
DEFAULT_WANDB_PROJECT = "lightning-unlearn"
from lightning_unlearn.validation import check_output_path


def run_compare(config: Config, *, progress: bool = False, logger: Optional[str] = None,
                project: Optional[str] = None, group: Optional[str] = None) -> dict[str, Any]:
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
        group: the W&B group of the rows (default: ``compare-<config>-<time>``).

    Returns:
        ``{"config", "forget", "original", "rows", "total_time_s", "versions"}``. Each row holds the
        row name, the registry ``method``, the ``class``, ``max_epochs``, ``init_args``, the four
        metrics in percent (2 decimals) under their evaluation keys (``unlearning_accuracy``,
        ``retain_acc``, ``test_acc``, ``mia_efficacy``), ``gap`` (``|x - Retrain|`` per metric,
        points), ``avg_gap`` (their mean), ``runtime_s`` (the unlearning fit without evaluation) and
        ``forget_acc``. The Retrain row's gaps are 0.

    Raises:
        ValueError: for an invalid config (unknown method, no Retrain row, bad init arguments),
            before anything is trained.
    """
    cfg, specs, original_spec = load_config(config)
    datamodule, network = cfg.data, cfg.model
    seed, mia_backend = int(cfg.seed), cfg.mia_backend
    options = trainer_options(cfg)

    if logger not in (None, "none", "wandb"):
        raise ValueError(f"`logger` must be None or 'wandb', got {logger!r}.")
    start = time.perf_counter()
    reference_name = next(name for name, spec in specs.items() if spec.method == REFERENCE)
    order = [reference_name] + [name for name in specs if name != reference_name]
    run_config = _run_config(cfg, datamodule, network, original_spec, specs, seed, mia_backend)
    group = group or f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    bar = _rows_bar(progress, len(order) + 1)
    with quiet_fit_warnings():
        bar.set_description("original")
        original, original_time = train_original(network, datamodule, original_spec, seed, progress=progress, **options)
        original_metrics = evaluate(original, datamodule, mia_backend=mia_backend,
                                    progress="evaluating the original" if progress else None)
        bar.update(1)
        runs: dict[str, RowRun] = {}
        for name in order:
            bar.set_description(name)
            reference = runs[reference_name].model if reference_name in runs else None
            row_logger: Any = wandb_row_logger(name, group, project, run_config) if logger == "wandb" else False
            try:
                runs[name] = run_row(specs[name], original, datamodule, seed, reference=reference,
                                     mia_backend=mia_backend, progress=progress, logger=row_logger,
                                     run_config=run_config if row_logger else None, **options)
            finally:
                if row_logger:
                    row_logger.experiment.finish()
            bar.update(1)
    bar.close()

    reference_metrics = runs[reference_name].after
    rows = [table_row(name, specs[name], runs[name].after, reference_metrics, runs[name].runtime_s) for name in order]
    return {
        "config": run_config,
        "forget": datamodule.forget_summary(),
        "original": {**percent(original_metrics), "runtime_s": round(original_time, 3)},
        "rows": rows,
        "total_time_s": round(time.perf_counter() - start, 3),
        "versions": versions(),
    }


def _run_config(cfg: Any, datamodule: Any, network: Any, original_spec: Any, specs: dict, seed: int,
                mia_backend: str) -> dict[str, Any]:
    """The comparison's configuration as the results (and each W&B run's config) show it."""
    return {
        "seed": seed,
        "accelerator": cfg.accelerator,
        "precision": cfg.get("precision"),
        "mia_backend": mia_backend,
        "data": {"class": type(datamodule).__name__, "forget": datamodule.forget.to_dict()},
        "model": {"class": type(network).__name__,
                  "parameters": sum(p.numel() for p in network.parameters())},
        "original": asdict(original_spec),
        "methods": {name: {"method": s.method, "max_epochs": int(s.max_epochs), "init_args": json_safe(s.init_args),
                           "callbacks": json_safe(s.callbacks)}
                    for name, s in specs.items()},
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
        project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT, group=group, job_type=row,
        name=f"{group}/{row}", config={"compare": config, "row": row}, save_dir=os.environ.get("WANDB_DIR", "."),
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
    if cfg.output is not None:
        try:
            check_output_path(cfg.output, "--output")
        except ValueError as exc:
            parser.error(str(exc))
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        result = run_compare(cfg, progress=sys.stderr.isatty(), logger=cfg.logger, project=cfg.project, group=cfg.group)
    except ValueError as exc:
        parser.error(str(exc))
    finally:  # a caller's logging is left as it was
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    print_table(result)
    if cfg.output:
        path = write_json(cfg.output, result)
        print(f"\nWrote {path}", flush=True)
