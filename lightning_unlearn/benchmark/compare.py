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
from lightning_unlearn.benchmark.table import format_table, percent, table_row
from lightning_unlearn.metrics.evaluation import evaluate
from lightning_unlearn.report import json_safe, versions, write_json
from lightning_unlearn.validation import check_output_path


def run_compare(config: Config) -> dict[str, Any]:
    """Runs the comparison.

    Trains the original (:class:`~lightning_unlearn.models.ImageClassifier`, whole training set),
    then every method in ``methods`` around a copy of it, Retrain first, each with
    :func:`~lightning_unlearn.benchmark.run_row`: its own ``Trainer`` and an
    :class:`~lightning_unlearn.callbacks.UnlearningEvaluation` callback (the retrained model as
    reference), after ``seed_everything(seed)``, so a row does not depend on the rows before it.
    Retrain's ``init_seed`` defaults to ``seed``.

    Args:
        config: a YAML path, a mapping with the same keys, or a parsed jsonargparse Namespace.

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

    start = time.perf_counter()
    with quiet_fit_warnings():
        original, original_time = train_original(network, datamodule, original_spec, seed, **options)
        original_metrics = evaluate(original, datamodule, mia_backend=mia_backend)

        reference_name = next(name for name, spec in specs.items() if spec.method == REFERENCE)
        order = [reference_name] + [name for name in specs if name != reference_name]
        runs: dict[str, RowRun] = {}
        for name in order:
            reference = runs[reference_name].model if reference_name in runs else None
            runs[name] = run_row(specs[name], original, datamodule, seed, reference=reference,
                                 mia_backend=mia_backend, **options)

    reference_metrics = runs[reference_name].after
    rows = [table_row(name, specs[name], runs[name].after, reference_metrics, runs[name].runtime_s) for name in order]
    return {
        "config": {
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
        },
        "forget": datamodule.forget_summary(),
        "original": {**percent(original_metrics), "runtime_s": round(original_time, 3)},
        "rows": rows,
        "total_time_s": round(time.perf_counter() - start, 3),
        "versions": versions(),
    }


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
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    try:
        result = run_compare(cfg)
    except ValueError as exc:
        parser.error(str(exc))
    print(format_table(result), flush=True)
    if cfg.output:
        path = write_json(cfg.output, result)
        print(f"\nWrote {path}", flush=True)
