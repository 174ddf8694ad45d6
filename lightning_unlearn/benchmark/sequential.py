"""``lightning-unlearn sequential``: a chain of deletion requests, unlearned one after another.

Real deletion requests arrive one after another. For a chain of ``K`` requests (a list of
:class:`~lightning_unlearn.data.ForgetSpec`), every row of a compare config runs as a chain: the
original is unlearned for request 0, that result for request 1, and so on, each step with its own
``Trainer``, the row's callbacks and an :class:`~lightning_unlearn.callbacks.UnlearningEvaluation`
(:func:`~lightning_unlearn.benchmark.run_row`). Step ``k`` serves D_f = request ``k`` and D_r =
everything not yet deleted (``UnlearningDataModule.with_requests(requests, k)``).

Per step and row:

* the usual four metrics on the current request (UA, RA, TA, MIA-efficacy) with their gaps to
  **Retrain of that step** (Retrain from scratch on D_r of step ``k``, the reference; computed
  once per step and cached, in memory and, with ``cache_dir``, on disk);
* **relapse**: accuracy and MIA-efficacy on every earlier forget set, and their change since the
  step that unlearned it (:mod:`lightning_unlearn.metrics.relapse`);
* retain and test accuracy over the chain (RA/TA of each step);
* a report per step (``output_dir/<row>/step_<k>.json``), chained: each carries the SHA-256 of
  the previous step's report (:func:`~lightning_unlearn.report.chain_report`; check a chain with
  :func:`~lightning_unlearn.report.verify_report_chain`).

The config is a compare config (:mod:`lightning_unlearn.benchmark.config`) plus::

    requests:                 # the chain, first request first (ForgetSpec fields)
      - {classes: [0]}
      - {classes: [1]}
    output_dir: null          # where the chained reports go (null: none written)
    cache_dir: null           # where Retrain per step is cached across runs (null: memory only)

``data.init_args.forget`` is replaced by the chain (set it to the first request).

Example::

    lightning-unlearn sequential --config configs/sequential_digits.yaml --output results_sequential.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from lightning_unlearn.benchmark.config import (
    REFERENCE,
    MethodSpec,
    OriginalSpec,
    build_parser,
    check_methods,
    resolve_config_args,
)
from lightning_unlearn.benchmark.runner import (
    quiet_fit_warnings,
    run_command,
    run_row,
    train_original,
    trainer_options,
)
from lightning_unlearn.benchmark.table import describe_run, percent, table_row
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.data.requests import as_requests
from lightning_unlearn.metrics.evaluation import evaluate
from lightning_unlearn.metrics.functional.mia import Backend
from lightning_unlearn.metrics.keys import GAP_METRICS
from lightning_unlearn.metrics.relapse import RELAPSE_ROW_KEYS, relapse_metrics, relapse_rows
from lightning_unlearn.models.network import copy_network
from lightning_unlearn.report import build_report, chain_report, json_safe, report_sha256, versions, write_report
from lightning_unlearn.validation import check_int

__all__ = ["build_sequential_parser", "format_sequential_tables", "main", "run_sequential"]


def build_sequential_parser(exit_on_error: bool = True) -> Any:
    """The compare parser (:func:`~lightning_unlearn.benchmark.build_parser`) plus ``requests``,
    ``output_dir`` and ``cache_dir``."""
    parser = build_parser(exit_on_error=exit_on_error)
    parser.prog = "lightning-unlearn sequential"
    parser.description = (
        "Unlearn a chain of deletion requests one after another with every configured method; per step: UA / RA /"
        " TA / MIA-efficacy against Retrain of that step, relapse on earlier forget sets, chained reports."
    )
    parser.add_argument(
        "--requests",
        type=list[dict[str, Any]],
        required=True,
        help="The chain of requests (ForgetSpec fields), first request first.",
    )
    parser.add_argument("--output_dir", type=Optional[str], default=None, help="Where to write the chained reports.")
    parser.add_argument("--cache_dir", type=Optional[str], default=None, help="Disk cache of Retrain per step.")
    return parser


def _parse(config: Any) -> Any:
    import os

    from jsonargparse import ArgumentError, Namespace

    parser = build_sequential_parser(exit_on_error=False)
    if isinstance(config, Namespace):
        return parser, config
    try:
        if isinstance(config, Mapping):
            return parser, parser.parse_object(dict(config))
        return parser, parser.parse_args(["--config", os.fspath(config)])
    except ArgumentError as exc:
        raise ValueError(f"Invalid sequential config: {exc}") from exc


def run_sequential(config: Any) -> dict[str, Any]:
    """Runs every row of ``config`` over the chain of requests.

    Args:
        config: a YAML path, a mapping, or a parsed Namespace (see the module docstring).

    Returns:
        ``{"config", "requests", "steps", "original", "rows", "total_time_s", "versions"}``.
        ``steps[k]`` describes request ``k`` (its forget summary and chain summary); ``rows[name][k]``
        holds the compare row (metrics in percent, gaps to Retrain of step ``k``, run time) plus
        ``relapse`` (per earlier request ``j``: ``forget_acc`` and ``mia_efficacy`` in percent and
        their changes since step ``j``, ``delta_forget_acc`` (up = relapse) and ``delta_mia``
        (down = relapse)), ``relapse_mean`` (their means over earlier requests) and
        ``report_sha256``. ``reference_relapse[k]`` is Retrain's relapse rows at step ``k``.

    Raises:
        ValueError: an invalid config or chain, before anything trains.
    """
    import lightning as L

    parser, cfg = _parse(config)
    specs = check_methods(cfg.methods)
    requests = as_requests(cfg.requests)
    L.seed_everything(int(cfg.seed), verbose=False)
    built = parser.instantiate_classes(cfg)
    base, network = built.data, built.model
    if not isinstance(base, UnlearningDataModule):
        raise ValueError(f"`data` must be an UnlearningDataModule, got {type(base).__name__}.")
    original_spec = OriginalSpec(**_plain(built.original))
    original_spec.max_epochs = check_int(original_spec.max_epochs, "original.max_epochs", minimum=1)
    seed, mia_backend = int(cfg.seed), cfg.mia_backend
    options = trainer_options(built)
    steps = [base.with_requests(requests, k) for k in range(len(requests))]  # resolves the chain: fails early
    for step in steps:
        step.setup("fit")

    start = time.perf_counter()
    reference_name = next(name for name, spec in specs.items() if spec.method == REFERENCE)
    cache = _RetrainCache(cfg.cache_dir, cfg, reference_name)
    with quiet_fit_warnings():
        original, original_time = train_original(network, steps[0], original_spec, seed, **options)
        original_metrics = evaluate(original, steps[0], mia_backend=mia_backend)
        references: list[nn.Module] = []
        for k, data in enumerate(steps):
            references.append(
                cache.get(
                    k,
                    lambda data=data: (
                        run_row(
                            specs[reference_name], original, data, seed, mia_backend=mia_backend, evaluation=False, **options
                        ).model
                    ),
                    original,
                )
            )
        reference_metrics = [evaluate(model, data, mia_backend=mia_backend) for model, data in zip(references, steps)]
        reference_relapse = [
            relapse_metrics(
                model, data.earlier_dataloaders(), data.retain_dataloader(), data.test_dataloader(), mia_backend=mia_backend
            )
            for model, data in zip(references, steps)
        ]
        rows: dict[str, list[dict[str, Any]]] = {}
        for name, spec in specs.items():
            if name == reference_name:  # the reference itself: no second training
                rows[name] = _reference_chain(
                    name, spec, steps, reference_metrics, reference_relapse, original_metrics, cache.runtime, cfg.output_dir
                )
                continue
            rows[name] = _run_chain(
                name, spec, original, steps, references, reference_metrics, seed, mia_backend, options, cfg.output_dir
            )

    return {
        "config": describe_run(cfg, {"class": type(base).__name__}, network, original_spec, specs),
        "requests": [r.to_dict() for r in requests],
        "steps": [{"step": k, "forget": data.forget_summary(), "chain": data.chain_summary()} for k, data in enumerate(steps)],
        "original": {**percent(original_metrics), "runtime_s": round(original_time, 3)},
        "reference": [percent(m) for m in reference_metrics],
        "reference_relapse": [[percent(row) for row in rows_k] for rows_k in reference_relapse],
        "rows": rows,
        "total_time_s": round(time.perf_counter() - start, 3),
        "versions": versions(),
    }


def _run_chain(
    name: str,
    spec: MethodSpec,
    original: nn.Module,
    steps: Sequence[UnlearningDataModule],
    references: Sequence[nn.Module],
    reference_metrics: Sequence[Mapping[str, Optional[float]]],
    seed: int,
    mia_backend: Backend,
    options: Mapping[str, Any],
    output_dir: Optional[str],
) -> list[dict[str, Any]]:
    """One row over the chain: step ``k`` starts from step ``k-1``'s model (Retrain: from scratch)."""
    model, previous_report, own, out = original, None, [], []
    for k, data in enumerate(steps):
        run = run_row(spec, model, data, seed, reference=references[k], mia_backend=mia_backend, **options)
        relapse = relapse_metrics(
            run.model, data.earlier_dataloaders(), data.retain_dataloader(), data.test_dataloader(), mia_backend=mia_backend
        )
        own.append(run.after)
        row = table_row(name, spec, run.after, reference_metrics[k], run.runtime_s)
        row["step"] = k
        row["relapse"] = relapse_rows(relapse, own)
        row["relapse_mean"] = _relapse_mean(row["relapse"])
        if run.evaluated.report is None:
            raise ValueError(f"Row {name!r} step {k} has no report: its evaluation did not finish.")
        report = dict(run.evaluated.report)
        report["metrics"] = {**report["metrics"], "relapse": [dict(r, request=j) for j, r in enumerate(relapse)]}
        report = chain_report(report, previous_report, data.chain_summary())
        row["report_sha256"] = report_sha256(report)
        if output_dir is not None:
            write_report(Path(output_dir) / name / f"step_{k}.json", report)
        previous_report, model = report, run.model
        out.append(row)
    return out


def _reference_chain(
    name: str,
    spec: MethodSpec,
    steps: Sequence[UnlearningDataModule],
    metrics: Sequence[Mapping[str, Optional[float]]],
    relapse: Sequence[Sequence[Mapping[str, float]]],
    original_metrics: Mapping[str, Optional[float]],
    runtime: Mapping[int, float],
    output_dir: Optional[str],
) -> list[dict[str, Any]]:
    """The Retrain row: the cached reference of every step (gaps 0), its relapse and chained reports."""
    previous_report, out = None, []
    for k, data in enumerate(steps):
        row = table_row(name, spec, metrics[k], metrics[k], runtime.get(k, 0.0))
        row["step"] = k
        row["relapse"] = relapse_rows(relapse[k], metrics)
        row["relapse_mean"] = _relapse_mean(row["relapse"])
        gap = {key: 0.0 for key in metrics[k]}
        report = build_report(
            "Retrain",
            spec.init_args,
            data.forget_summary(),
            original_metrics,
            metrics[k],
            reference=metrics[k],
            gap={**gap, "avg_gap": 0.0},
            runtime_s=runtime.get(k, 0.0),
            seed=None,
        )
        report["metrics"]["relapse"] = [dict(r, request=j) for j, r in enumerate(relapse[k])]
        report = chain_report(report, previous_report, data.chain_summary())
        row["report_sha256"] = report_sha256(report)
        if output_dir is not None:
            write_report(Path(output_dir) / name / f"step_{k}.json", report)
        previous_report = report
        out.append(row)
    return out


def _relapse_mean(relapse: Sequence[Mapping[str, float]]) -> Optional[dict[str, float]]:
    if not relapse:
        return None
    return {key: round(sum(r[key] for r in relapse) / len(relapse), 2) for key in RELAPSE_ROW_KEYS}


class _RetrainCache:
    """Retrain per step: in memory, and on disk under ``cache_dir`` keyed by the SHA-256 of the
    data, model, original and Retrain-row config, the seed and the chain up to the step."""

    def __init__(self, cache_dir: Optional[str], cfg: Any, reference_name: str) -> None:
        self.dir = None if cache_dir is None else Path(cache_dir)
        self.memory: dict[int, nn.Module] = {}
        self.runtime: dict[int, float] = {}
        self.base = {
            key: json_safe(_plain(cfg.get(key))) for key in ("seed", "data", "model", "original", "precision", "accelerator")
        }
        self.base["retrain"] = json_safe(_plain(cfg.methods[reference_name]))
        self.requests = [json_safe(_plain(r)) for r in cfg.requests]

    def key(self, step: int) -> str:
        payload = {**self.base, "requests": self.requests[: step + 1], "torch": torch.__version__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def get(self, step: int, train: Any, like: nn.Module) -> nn.Module:
        if step in self.memory:
            return self.memory[step]
        path = None if self.dir is None else self.dir / f"retrain_{self.key(step)}.pt"
        if path is not None and path.is_file():
            model = copy_network(like)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            sidecar = path.with_suffix(".json")
            self.runtime[step] = json.loads(sidecar.read_text())["runtime_s"] if sidecar.is_file() else 0.0
            logging.getLogger(__name__).info("Retrain of step %d from the cache %s", step, path)
        else:
            tic = time.perf_counter()
            model = train()
            self.runtime[step] = time.perf_counter() - tic
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), path)
                path.with_suffix(".json").write_text(json.dumps({"runtime_s": self.runtime[step], "step": step}) + "\n")
        self.memory[step] = model
        return model


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def format_sequential_tables(result: Mapping[str, Any]) -> str:
    """Two markdown tables: per row and step, the current request's metrics with the Avg. Gap to
    that step's Retrain; and relapse: mean forget accuracy / MIA-efficacy on the earlier forget
    sets, with their mean change since each was unlearned."""
    header = ["Method", "step", *GAP_METRICS.values(), "Avg. Gap", "RTE (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for name, chain in result["rows"].items():
        for row in chain:
            cells = [name, str(row["step"])] + [f"{row[key]:.2f} ({row['gap'][key]:.2f})" for key in GAP_METRICS]
            cells += [f"{row['avg_gap']:.2f}", f"{row['runtime_s']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    steps = len(result["steps"])
    relapse_header = ["Method"] + [f"after step {k}" for k in range(1, steps)]
    relapse = ["| " + " | ".join(relapse_header) + " |", "|" + "|".join(["---"] + ["---:"] * (steps - 1)) + "|"]
    for name, chain in result["rows"].items():
        cells = [name]
        for row in chain[1:]:
            m = row["relapse_mean"]
            acc, mia, delta_acc, delta_mia = (m[key] for key in RELAPSE_ROW_KEYS)
            cells.append(f"{acc:.2f} / {mia:.2f} ({delta_acc:+.2f} / {delta_mia:+.2f})")
        relapse.append("| " + " | ".join(cells) + " |")
    caption = (
        f"{steps} requests ({'; '.join(_describe(r) for r in result['requests'])}); metrics in %, (|gap| to Retrain of"
        " the step). Relapse: mean forget accuracy / MIA-efficacy on the earlier forget sets (their mean change since"
        " each was unlearned; accuracy up or MIA down = relapse)."
    )
    return "\n".join(lines) + "\n\n" + "\n".join(relapse) + "\n\n" + caption


def _describe(request: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v}" for k, v in request.items() if v is not None and (k != "seed" or request.get("ratio") is not None)
    )


def main(args: Optional[Sequence[str]] = None) -> None:
    """``lightning-unlearn sequential``: parses the command line, runs :func:`run_sequential`,
    prints the tables and writes ``--output`` when given."""
    import sys

    parser = build_sequential_parser()
    cfg = parser.parse_args(resolve_config_args(list(sys.argv[2:] if args is None else args)))
    run_command(
        parser, cfg.output, lambda: run_sequential(cfg), lambda result: print(format_sequential_tables(result), flush=True)
    )
