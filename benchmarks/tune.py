"""Honest tuning: every row's hyper-parameters are chosen on a *validation* forget request, never
on a request the quality table reports.

    python -m benchmarks.tune --config benchmarks/configs/fmnist_cpu.yaml --scenario random10 \
        --out-dir benchmarks/configs/tuned_cpu [--json results/tune_cpu_random10.json]

Protocol, per scenario:

1. The validation request differs from every reported one: random 10 % drawn with forget seed
   ``VALIDATION_SEED`` (the table reports forget seeds 0, 1, 2) or class-wise on class
   ``VALIDATION_CLASS`` (the table reports class 0); the original's training seed and the data
   order are ``VALIDATION_SEED`` too.
2. The original and Retrain are trained on it exactly as ``compare`` does.
3. Every other row of the config is run on a grid: its ``lr`` times ``LR_FACTORS``; epochs
   ``1 .. max_epochs`` (the row's ``max_epochs`` in the config is the largest tried; one fit
   evaluated after every epoch, or one fit per epoch count for rows whose training depends on the
   fit length, such as a cosine schedule or a decaying sparsity weight); the row's extra grid in
   ``EXTRA_GRIDS``; and, for a row that subsamples its epochs (``trainer.limit_train_batches``),
   that fraction times ``LIMIT_FACTORS``. ``ROW_GRIDS`` overrides this per row name (a wider lr
   grid, fewer epoch counts, fixed extras).
4. Score: Avg. Gap to the validation Retrain (UA, RA, TA, MIA-efficacy, points). The lowest
   wins; a tie (to 0.01) goes to the shorter run.
5. The winners are written as compare rows to ``{out_dir}/{scenario}.yaml``;
   ``python -m benchmarks.quality --tuned {out_dir}`` reports them on the reported requests.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import lightning as L
import yaml

from benchmarks.common import emit
from benchmarks.quality import SCENARIOS, scenario_config, select_rows
from lightning_unlearn import registry
from lightning_unlearn.benchmark import (
    REFERENCE,
    MethodSpec,
    load_config,
    percent,
    quiet_fit_warnings,
    run_row,
    train_original,
    trainer_options,
)
from lightning_unlearn.metrics.evaluation import evaluate
from lightning_unlearn.metrics.functional import avg_gap
from lightning_unlearn.metrics.keys import GAP_METRICS

VALIDATION_SEED = 1000
VALIDATION_CLASS = 2
LR_FACTORS = (1 / 3, 1.0, 3.0)
#: Extra grid per registry name (method or callback): init argument -> values tried.
EXTRA_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "ssd": {"alpha": (1.0, 2.0, 5.0, 10.0)},
    "saliency_mask": {"threshold": (0.3, 0.5, 0.7)},
    "sparsity_regularization": {"alpha": (1e-4, 5e-4)},
}
#: Callbacks whose schedule spans ``trainer.max_epochs``: their rows run one fit per epoch count.
FIT_LENGTH_DEPENDENT = {"sparsity_regularization"}
#: Factors on a row's ``trainer.limit_train_batches`` (capped at 1).
LIMIT_FACTORS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class RowGrid:
    """A row's own grid (see ``ROW_GRIDS``).

    Attributes:
        lr_factors: factors on the row's ``lr``.
        epochs: the epoch counts tried (``None``: ``1 .. max_epochs``).
        extras: the extra grid per registry name (``None``: ``EXTRA_GRIDS``; ``{}``: the config's
            values are kept).
        limits: the ``trainer.limit_train_batches`` fractions tried (``None``: the row's own
            times ``LIMIT_FACTORS``).
    """

    lr_factors: tuple[float, ...] = LR_FACTORS
    epochs: Optional[tuple[int, ...]] = None
    extras: Optional[dict[str, dict[str, tuple[Any, ...]]]] = None
    limits: Optional[tuple[float, ...]] = None


#: Per-row grids of benchmarks/configs/fmnist_*.yaml (rows not named here use the default grid),
#: sized so that re-tuning the changed and new rows fits in about 20 CPU-minutes per scenario.
ROW_GRIDS: dict[str, RowGrid] = {
    "finetune_cosine": RowGrid((0.6, 1.0, 1.8), (4, 5)),  # lr 0.06, 0.1, 0.18 (1-3 epochs: the earlier grid)
    "random_label": RowGrid((0.25, 1.0, 4.0)),
    "random_label_cosine": RowGrid((1 / 3, 1.0, 3.0), (1, 2)),
    "salun": RowGrid((0.25, 1.0, 4.0), extras={"saliency_mask": {"threshold": (0.5, 0.7)}}),
    "salun_cosine": RowGrid((1.0, 3.0), (1, 2), extras={}),
    "gradient_ascent_cosine": RowGrid(LR_FACTORS, (1, 2, 3)),
    "neggrad_plus_cosine": RowGrid((1.0, 2.0), (1, 2)),
    "l1_sparse_cosine": RowGrid((1.0, 3.0), (2, 3), extras={}),
    "eupmu_implicit_cosine": RowGrid((1.0, 2.0), (1, 2)),
    "scrub_cosine": RowGrid((1.0, 2.0), (1, 2)),
    "finetune_cosine_sub": RowGrid((1.0, 2.0), (1, 2), limits=(0.25, 0.5)),
    "random_label_cosine_sub": RowGrid((1.0, 3.0), (1, 2), limits=(0.25, 0.5)),
}


class EpochScores(L.Callback):
    """Evaluates the network after every training epoch (at the next epoch's start and at the
    end of training, so edits made in a method's own ``on_train_epoch_end`` count) and records
    the fit time so far, evaluation excluded."""

    def __init__(self, mia_backend: str) -> None:
        self.mia_backend, self.scores, self._spent, self._tic = mia_backend, [], 0.0, 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._tic = time.perf_counter()

    def _record(self, trainer, pl_module) -> None:
        self._spent += time.perf_counter() - self._tic
        metrics = evaluate(pl_module.model, trainer.datamodule, mia_backend=self.mia_backend)
        self.scores.append({"epochs": len(self.scores) + 1, "runtime_s": self._spent, **percent(metrics, GAP_METRICS)})
        self._tic = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)


def candidates(spec: MethodSpec, grid: RowGrid = RowGrid()) -> Iterator[tuple[MethodSpec, bool]]:
    """The grid of one row: ``(spec with max_epochs = the largest epoch count to read, per_epoch)``;
    ``per_epoch`` says whether every epoch count up to it is read from the same fit."""
    parameters = registry.init_parameters(registry.get(spec.method).cls)
    takes_lr = "lr" in parameters
    base_lr = spec.init_args.get("lr", parameters["lr"].default) if takes_lr else None
    lrs = [float(f"{factor * base_lr:.3g}") for factor in grid.lr_factors] if takes_lr else [None]
    extras = EXTRA_GRIDS if grid.extras is None else grid.extras
    grids: list[tuple[Optional[int], str, tuple[Any, ...]]] = [(None, k, v) for k, v in extras.get(spec.method, {}).items()]
    for i, callback in enumerate(spec.callbacks):
        grids += [(i, k, v) for k, v in extras.get(callback["callback"], {}).items()]
    trainer = dict(spec.trainer or {})
    limit = trainer.get("limit_train_batches")
    if grid.limits is not None:
        limits: list[Any] = list(grid.limits)
    else:
        limits = sorted({min(1.0, float(f"{f * limit:.3g}")) for f in LIMIT_FACTORS}) if isinstance(limit, float) else [limit]
    length_dependent = bool(spec.init_args.get("lr_scheduler")) or any(
        c["callback"] in FIT_LENGTH_DEPENDENT for c in spec.callbacks
    )
    if grid.epochs is not None:
        epoch_counts = list(grid.epochs) if length_dependent else [max(grid.epochs)]
    else:
        epoch_counts = range(1, spec.max_epochs + 1) if length_dependent else [spec.max_epochs]
    for lr, values, fraction, epochs in itertools.product(lrs, itertools.product(*(g[2] for g in grids)), limits, epoch_counts):
        init_args = dict(spec.init_args)
        if takes_lr:
            init_args["lr"] = lr
        callbacks = [{"callback": c["callback"], "init_args": dict(c.get("init_args") or {})} for c in spec.callbacks]
        for (where, key, _), value in zip(grids, values):
            (init_args if where is None else callbacks[where]["init_args"])[key] = value
        options = {**trainer, **({"limit_train_batches": fraction} if fraction is not None else {})}
        yield MethodSpec(spec.method, epochs, init_args, callbacks, trainer=options), not length_dependent


def tune(config: dict[str, Any], scenario: str, row_grids: Optional[dict[str, RowGrid]] = None) -> tuple[dict, str]:
    """Runs the protocol on one scenario; returns the JSON result and a markdown table.
    ``row_grids``: per-row grids by row name (the command line passes ``ROW_GRIDS``)."""
    cfg_dict = scenario_config(config, scenario, VALIDATION_SEED, validation_class=VALIDATION_CLASS)
    cfg, specs, original_spec = load_config(cfg_dict)
    datamodule, seed = cfg.data, VALIDATION_SEED
    reference_name = next(name for name, s in specs.items() if s.method == REFERENCE)
    trials, rejected, chosen = [], [], {}
    options = trainer_options(cfg)
    with quiet_fit_warnings():
        original, _ = train_original(cfg.model, datamodule, original_spec, seed, **options)
        retrain = run_row(specs[reference_name], original, datamodule, seed, mia_backend=cfg.mia_backend, **options)
        reference = percent(retrain.after, GAP_METRICS)
        retrain_time = retrain.runtime_s
        for name, spec in specs.items():
            if spec.method == REFERENCE:
                continue
            for candidate, per_epoch in candidates(spec, (row_grids or {}).get(name, RowGrid())):
                scores = EpochScores(cfg.mia_backend)
                try:  # EpochScores scores the fit; an UnlearningEvaluation's before/after passes would only add time
                    run_row(candidate, original, datamodule, seed, evaluation=False, callbacks=[scores], **options)
                except ValueError as error:  # a setting this request rules out (e.g. SSD's alpha), before any step
                    rejected.append(
                        {
                            "row": name,
                            "init_args": candidate.init_args,
                            "callbacks": candidate.callbacks,
                            "trainer": candidate.trainer,
                            "error": str(error),
                        }
                    )
                    print(f"[tune {scenario}] {name} {candidate.init_args}: rejected: {error}", file=sys.stderr, flush=True)
                    continue
                read = scores.scores if per_epoch else scores.scores[-1:]
                for score in read:
                    trials.append(
                        {
                            "row": name,
                            "method": candidate.method,
                            "init_args": candidate.init_args,
                            "callbacks": candidate.callbacks,
                            "trainer": candidate.trainer,
                            **score,
                            "max_epochs": score["epochs"] if per_epoch else candidate.max_epochs,
                            "avg_gap": round(avg_gap(score, reference), 2),
                        }
                    )
                    print(
                        f"[tune {scenario}] {name} {candidate.init_args} {candidate.callbacks} {candidate.trainer} epochs"
                        f" {trials[-1]['max_epochs']}: Avg. Gap {trials[-1]['avg_gap']:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
            best = min((t for t in trials if t["row"] == name), key=lambda t: (round(t["avg_gap"], 2), t["runtime_s"]))
            chosen[name] = best
    header = ["row", "chosen", "epochs", *GAP_METRICS.values(), "Avg. Gap", "RTE (s)", "tried"]
    table = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    table += (
        f"| {reference_name} | (reference) | {specs[reference_name].max_epochs} | "
        + " | ".join(f"{reference[key]:.2f}" for key in GAP_METRICS)
        + f" | 0.00 | {retrain_time:.2f} | 1 |\n"
    )
    for name, best in chosen.items():
        knobs = ", ".join(f"{k}={v}" for k, v in best["init_args"].items())
        knobs += "".join(
            f"; {c['callback']}: " + ", ".join(f"{k}={v}" for k, v in c["init_args"].items()) for c in best["callbacks"]
        )
        knobs += "".join(f"; {k}={v}" for k, v in (best.get("trainer") or {}).items())
        table += f"| {name} | {knobs} | {best['max_epochs']} | " + " | ".join(f"{best[key]:.2f}" for key in GAP_METRICS)
        table += f" | {best['avg_gap']:.2f} | {best['runtime_s']:.2f} | {sum(t['row'] == name for t in trials)} |\n"
    rows = {
        name: {
            "method": b["method"],
            "max_epochs": b["max_epochs"],
            "init_args": b["init_args"],
            **({"callbacks": b["callbacks"]} if b["callbacks"] else {}),
            **({"trainer": b["trainer"]} if b.get("trainer") else {}),
        }
        for name, b in chosen.items()
    }
    result = {
        "scenario": scenario,
        "validation": cfg_dict["data"]["init_args"]["forget"],
        "seed": seed,
        "reference": {**reference, "runtime_s": retrain_time},
        "chosen": rows,
        "trials": trials,
        "rejected": rejected,
    }
    return result, table


def write_rows(result: dict, out_dir: str, config_path: str) -> Path:
    """Writes the chosen rows of one scenario into ``{out_dir}/{scenario}.yaml`` (a ``methods``
    mapping without the Retrain rows, which are not tuned); rows tuned earlier and not re-tuned now
    stay."""
    path = Path(out_dir) / f"{result['scenario']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = yaml.safe_load(path.read_text())["methods"] if path.is_file() else {}
    rows.update(result["chosen"])
    header = (
        f"# Written by benchmarks/tune.py from {config_path}, scenario {result['scenario']}: chosen on the validation\n"
        f"# request {result['validation']} (seed {result['seed']}), never on a reported one.\n"
    )
    path.write_text(header + yaml.safe_dump({"methods": rows}, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="benchmarks/configs/fmnist_cpu.yaml")
    parser.add_argument("--scenario", required=True, choices=list(SCENARIOS))
    parser.add_argument("--out-dir", default="benchmarks/configs/tuned_cpu")
    parser.add_argument("--json", default=None, help="Where to write every trial (JSON).")
    parser.add_argument("--rows", nargs="+", default=None, help="Tune only these rows (the others keep their tuned values).")
    args = parser.parse_args()
    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    result, table = tune(select_rows(config, args.rows), args.scenario, ROW_GRIDS)
    emit("tune", result, table, args.json)
    print(f"wrote {write_rows(result, args.out_dir, args.config)}")


if __name__ == "__main__":
    main()
