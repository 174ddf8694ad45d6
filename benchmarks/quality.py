"""Quality vs Retrain on Fashion-MNIST: every method in a compare config, two scenarios
(random 10 % and class-wise), several seeds, mean ± std.

    python -m benchmarks.quality --config benchmarks/configs/fmnist_cpu.yaml --seeds 0 1 2 \
        [--tuned benchmarks/configs/tuned_cpu] [--scenarios random10 classwise] [--out results/quality_cpu.json]

Each (scenario, seed) is one `lightning-unlearn compare` run (original, Retrain, every method);
the table reports UA, RA, TA, MIA-efficacy (%), Avg. Gap to Retrain (points) and the cost: run
time (s, and % of that run's Retrain) and epochs-equivalent of D (examples forwarded and
backpropagated by the fit / |D|, counted by :class:`~lightning_unlearn.benchmark.tuning.SampleCounter`).
``--tuned`` swaps in the rows benchmarks/tune.py chose on a validation request (several
directories may be given; rows named ``<row>@<tag>``, e.g. benchmarks/tune_oracle_free.py's, are
added); the reported requests (forget seeds = training seeds 0, 1, 2; class 0) are never tuned on.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import yaml

from benchmarks.common import emit, mean_std
from lightning_unlearn.benchmark import (
    REFERENCE,
    load_config,
    percent,
    quiet_fit_warnings,
    run_row,
    table_row,
    train_original,
    trainer_options,
)
from lightning_unlearn.benchmark.tuning import SampleCounter
from lightning_unlearn.metrics.evaluation import evaluate
from lightning_unlearn.metrics.keys import GAP_METRICS

SCENARIOS = {
    "random10": {"ratio": 0.1, "seed": 0},
    "classwise": {"classes": [0]},
}


def scenario_config(
    config: dict[str, Any], scenario: str, seed: int, validation_class: Optional[int] = None, tuned: Any = None
) -> dict[str, Any]:
    """The compare config of one (scenario, seed): the forget request (random draws use ``seed``;
    class-wise forgets class 0, or ``validation_class`` when tuning), the training seed and data
    order ``seed``, and the rows of ``{tuned}/{scenario}.yaml`` (benchmarks/tune.py; ``tuned`` may
    be a list of directories, read in order) in place of the config's rows of the same name, plus
    their rows named ``<row>@<tag>`` whose ``<row>`` is in the config."""
    cfg = copy.deepcopy(config)
    forget = dict(SCENARIOS[scenario])
    if "ratio" in forget:
        forget["seed"] = seed
    elif validation_class is not None:
        forget["classes"] = [validation_class]
    cfg["seed"] = seed
    cfg["data"]["init_args"]["forget"] = forget
    cfg["data"]["init_args"]["shuffle_seed"] = seed
    for directory in [tuned] if isinstance(tuned, str) else list(tuned or []):
        path = Path(directory) / f"{scenario}.yaml"
        if not path.is_file():
            raise FileNotFoundError(
                f"--tuned {directory}: no {path}; run `python -m benchmarks.tune --scenario {scenario} --out-dir {directory}`."
            )
        rows = yaml.safe_load(path.read_text())["methods"]
        base = dict(cfg["methods"])
        cfg["methods"] = {name: rows.get(name, spec) for name, spec in base.items()}
        cfg["methods"].update({name: spec for name, spec in rows.items() if "@" in name and name.split("@")[0] in base})
    return cfg


#: The table's numbers per row: the gap metrics, Avg. Gap, the best threshold attack's forget-vs-test
#: AUC (runs made before the audit column show "-"), the run time, % of Retrain, epochs of D.
COLUMNS = (*GAP_METRICS, "avg_gap", "mia_auc", "runtime_s", "time_vs_retrain", "epochs_equivalent")


def compare_with_cost(config: dict[str, Any]) -> dict[str, Any]:
    """``run_compare`` with each row's cost in epochs-equivalent of D (``epochs_equivalent``):
    the original, the Retrain reference first, then every row, each through ``run_row``."""
    cfg, specs, original_spec = load_config(config)
    datamodule, seed, options = cfg.data, int(cfg.seed), trainer_options(cfg)
    with quiet_fit_warnings():
        original, original_time = train_original(cfg.model, datamodule, original_spec, seed, **options)
        original_metrics = evaluate(original, datamodule, mia_backend=cfg.mia_backend)
        reference_name = next(name for name, spec in specs.items() if spec.method == REFERENCE)
        rows, reference, reference_audit = [], None, None
        for name in [reference_name] + [n for n in specs if n != reference_name]:
            counter = SampleCounter()
            run = run_row(
                specs[name],
                original,
                datamodule,
                seed,
                reference=reference,
                mia_backend=cfg.mia_backend,
                callbacks=[counter],
                audits="attacks",  # compare's audit columns, from the evaluation pass itself
                **options,
            )
            audit = (run.evaluation.audit or {}).get("after") if run.evaluation is not None else None
            if name == reference_name:
                reference, reference_metrics, reference_audit = run.model, run.after, audit
            row = table_row(name, specs[name], run.after, reference_metrics, run.runtime_s, audit, reference_audit)
            row["epochs_equivalent"] = round(counter.epochs_equivalent(datamodule), 4)
            rows.append(row)
    return {
        "forget": datamodule.forget_summary(),
        "original": {**percent(original_metrics), "runtime_s": original_time},
        "rows": rows,
    }


def select_rows(config: dict[str, Any], rows: Optional[list[str]]) -> dict[str, Any]:
    """The config with only the named rows and the Retrain reference (its first Retrain row);
    ``None`` keeps them all."""
    if not rows:
        return config
    unknown = sorted(set(rows) - set(config["methods"]))
    if unknown:
        raise ValueError(f"--rows: no row(s) {unknown} in the config; its rows are {list(config['methods'])}.")
    reference = next(name for name, spec in config["methods"].items() if spec["method"] == "retrain")
    cfg = copy.deepcopy(config)
    cfg["methods"] = {name: spec for name, spec in config["methods"].items() if name in rows or name == reference}
    return cfg


def epochs_of_d(row: dict[str, Any], forget: dict[str, Any], batch_size: int, forget_batch_size: int) -> float:
    """Epochs-equivalent of D of a row measured before :class:`SampleCounter` existed, by the rule
    it counts with: FineTune (l1-sparse) ``E N_r``; GradientAscent ``E N_f``; NegGrad+ and EUPMU
    (paired, an epoch over D_r with D_f cycled) ``E (N_r + ceil(N_r / B) B_f)``; SCRUB
    ``min(E, msteps) N_f + E N_r``; SSD ``N_f + N_r``; divided by ``N_f + N_r``."""
    n_f, n_r, epochs = forget["count"], forget["retain_count"], row["max_epochs"]
    method = row["method"]
    if method in ("finetune", "retrain"):
        samples = epochs * n_r
    elif method == "gradient_ascent":
        samples = epochs * n_f
    elif method in ("neggrad_plus", "implicit_gradient_surgery"):
        samples = epochs * (n_r + math.ceil(n_r / batch_size) * forget_batch_size)
    elif method == "scrub":
        samples = min(epochs, int(row["init_args"].get("msteps", 2))) * n_f + epochs * n_r
    elif method == "ssd":
        samples = n_f + n_r
    else:
        raise ValueError(f"No counting rule for carried-over rows of method {method!r}: run the row again.")
    return samples / (n_f + n_r)


def carry_over(result: dict[str, Any], earlier: dict[str, Any], rows: list[str], scenario: str, seed: int) -> list[dict]:
    """The ``rows`` of an earlier quality run of the same (scenario, seed), when its Retrain
    reference reproduced exactly (same UA, RA, TA and MIA-efficacy): same original, same Retrain,
    so rows whose code did not change would measure the same again (run times aside)."""
    old = next((r["result"] for r in earlier["runs"] if r["scenario"] == scenario and r["seed"] == seed), None)
    if old is None:
        raise ValueError(f"--carry: no earlier run of {scenario} seed {seed}.")
    new_ref, old_ref = result["rows"][0], old["rows"][0]
    if any(new_ref[k] != old_ref[k] for k in GAP_METRICS) or result["forget"]["fingerprint"] != old["forget"]["fingerprint"]:
        raise ValueError(
            f"--carry: the Retrain reference of {scenario} seed {seed} did not reproduce"
            f" ({ {k: new_ref[k] for k in GAP_METRICS} } vs { {k: old_ref[k] for k in GAP_METRICS} }): run the rows again."
        )
    data = old["config"].get("data", {})
    batch = data.get("init_args", {}).get("batch_size", 128) if isinstance(data.get("init_args"), dict) else 128
    carried = []
    for name in rows:
        row = copy.deepcopy(next(r for r in old["rows"] if r["name"] == name))
        row["epochs_equivalent"] = round(epochs_of_d(row, result["forget"], batch, batch), 4)
        row["runtime_s"] = row["runtime_s"] * new_ref["runtime_s"] / old_ref["runtime_s"]  # keeps its % of Retrain
        row["carried_over"] = True
        carried.append(row)
    return carried


def run(
    config: dict[str, Any],
    scenarios: list[str],
    seeds: list[int],
    tuned: Any = None,
    carry: Optional[str] = None,
    carry_rows: Optional[list[str]] = None,
) -> tuple[dict, str]:
    runs = []
    earlier = json.loads(Path(carry).read_text()) if carry else None
    for scenario in scenarios:
        for seed in seeds:
            result = compare_with_cost(scenario_config(config, scenario, seed, tuned=tuned))
            if earlier is not None and carry_rows:
                result["rows"] += carry_over(result, earlier, carry_rows, scenario, seed)
            runs.append({"scenario": scenario, "seed": seed, "result": result})
    return summarize(runs)


def summarize(runs: list[dict[str, Any]]) -> tuple[dict, str]:
    """Mean ± std per (scenario, row) over the runs, and the markdown table. Runs of the same
    (scenario, seed) (e.g. rows run in separate invocations, each with its Retrain reference) are
    merged first: their Retrain references must agree exactly."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    runs = copy.deepcopy(runs)
    for run_ in runs:  # % of Retrain against the Retrain of the row's own invocation
        rows = run_["result"]["rows"]
        for row in rows:
            row.setdefault("time_vs_retrain", 100.0 * (row["runtime_s"] / rows[0]["runtime_s"]))  # Retrain itself: exactly 100
    for run_ in runs:
        key = (run_["scenario"], run_["seed"])
        if key not in merged:
            merged[key] = copy.deepcopy(run_)
            continue
        here, there = merged[key]["result"]["rows"], run_["result"]["rows"]
        if any(here[0][k] != there[0][k] for k in GAP_METRICS):
            raise ValueError(f"Runs of {key} disagree on the Retrain reference: they are not the same request.")
        names = {row["name"] for row in here}
        here += [row for row in there[1:] if row["name"] not in names]
    per_scenario: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (scenario, _), run_ in merged.items():
        cells = per_scenario.setdefault(scenario, defaultdict(lambda: defaultdict(list)))
        for row in run_["result"]["rows"]:
            for key in COLUMNS:
                if row.get(key) is not None:
                    cells[row["name"]][key].append(row[key])
    titles = [
        "scenario",
        "method",
        *GAP_METRICS.values(),
        "Avg. Gap",
        "MIA AUC (best)",
        "RTE (s)",
        "RTE (% of Retrain)",
        "epochs of D",
    ]
    header = "| " + " | ".join(titles) + " |\n|" + "---|" * len(titles) + "\n"
    lines = []
    summary = {}
    for scenario, cells in per_scenario.items():
        summary[scenario] = {}
        for name, values in cells.items():
            summary[scenario][name] = {
                k: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0} for k, v in values.items()
            }
            cols = [mean_std(values[key]) if values.get(key) else "-" for key in COLUMNS]
            lines.append(f"| {scenario} | {name} | " + " | ".join(cols) + " |")
    seeds = sorted({seed for _, seed in merged})
    return {"seeds": seeds, "summary": summary, "runs": list(merged.values())}, header + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="benchmarks/configs/fmnist_cpu.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--tuned", nargs="+", default=None, help="Directories of tuned rows ({scenario}.yaml), read in order.")
    parser.add_argument("--rows", nargs="+", default=None, help="Only these rows (and the Retrain reference).")
    parser.add_argument(
        "--carry",
        default=None,
        help="An earlier quality JSON whose --carry-rows are carried over"
        " (checked: its Retrain reference must reproduce exactly).",
    )
    parser.add_argument("--carry-rows", nargs="+", default=None, help="Rows (unchanged code) taken from --carry.")
    parser.add_argument("--merge", nargs="+", default=None, help="Only merge these quality JSONs (their runs) into one table.")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.merge:
        result, table = summarize([run_ for path in args.merge for run_ in json.loads(Path(path).read_text())["runs"]])
        emit("quality", result, table, args.out)
        return
    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    result, table = run(select_rows(config, args.rows), args.scenarios, args.seeds, args.tuned, args.carry, args.carry_rows)
    emit("quality", result, table, args.out)


if __name__ == "__main__":
    main()
