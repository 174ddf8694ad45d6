"""Is MIA-efficacy reliable here? The same methods on forget sets of slightly different size and
random draws, MIA-efficacy beside the per-example audits.

    python -m benchmarks.reliability --config benchmarks/configs/digits_population.yaml --models 8 \\
        --ratios 0.09 0.10 0.11 --draws 0 1 2 --out results/reliability_digits.json --plot results/reliability_digits.png

For every forget set (``ratio`` x ``draw``: ForgetSpec(ratio=ratio, seed=draw)) a model population
(:func:`~lightning_unlearn.benchmark.population.run_population`: the originals are trained once
and shared, each forget set adds N oracles and N unlearned models per row). Reported per row
and forget set: the single-run MIA-efficacy gap to Retrain (the first seed's models: what one
``compare`` run shows), the population-mean MIA-efficacy gap, KLoM on D_f, U-LiRA accuracy and
the challenge score; then, over the forget sets, their spread and how often each number's
verdict (out of line with Retrain beyond the reseeded-Retrain floor) agrees with its majority.
The un-pruning paper's claim is that a small change in the amount of deleted data can move
MIA-efficacy arbitrarily; this measures it beside the per-example audits.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
from typing import Any, Optional

import torch
import yaml

from benchmarks.common import emit
from lightning_unlearn.benchmark.population import run_population

#: The numbers compared, with how to read each from a population row (and its reseeded floor).
QUANTITIES = {
    "single_run_mia_gap": "single-run MIA-efficacy gap to Retrain (points)",
    "mia_gap": "population-mean MIA-efficacy gap to Retrain (points)",
    "klom_forget": "KLoM on D_f (mean over examples)",
    "ulira": "U-LiRA accuracy",
    "score": "challenge score",
}


def _quantities(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    mia, ref_mia = row["per_model"]["mia_efficacy"], reference["per_model"]["mia_efficacy"]
    return {
        "single_run_mia_gap": abs(mia[0] - ref_mia[0]),
        "mia_gap": row["gap"]["mia_efficacy"],
        "klom_forget": row["klom"]["forget"]["mean"],
        "ulira": row["ulira_accuracy"],
        "score": row["challenge_score"],
    }


def _flags(values: dict[str, float], floor: dict[str, float]) -> dict[str, bool]:
    """Out of line with Retrain beyond the reseeded row's distance (gaps and KLoM: larger than the
    reseeded row's; U-LiRA: further from 0.5; score: further below 1)."""
    return {
        "single_run_mia_gap": values["single_run_mia_gap"] > floor["single_run_mia_gap"],
        "mia_gap": values["mia_gap"] > floor["mia_gap"],
        "klom_forget": values["klom_forget"] > floor["klom_forget"],
        "ulira": abs(values["ulira"] - 0.5) > abs(floor["ulira"] - 0.5),
        "score": values["score"] < floor["score"],
    }


def run(
    config: dict[str, Any],
    ratios: list[float],
    draws: list[int],
    models: int,
    rows: Optional[list[str]],
    cache_dir: str,
    progress: Any = None,
) -> tuple[dict, str]:
    sets = []
    for ratio in ratios:
        for draw in draws:
            cfg = copy.deepcopy(config)
            cfg["data"]["init_args"]["forget"] = {"ratio": ratio, "seed": draw}
            result = run_population(cfg, models=models, rows=rows, cache_dir=cache_dir, progress=progress)
            by_name = {row["name"]: row for row in result["rows"]}
            reference, reseeded = by_name[result["reference"]], by_name.get(result["reseeded_row"])
            if reseeded is None:
                raise ValueError(
                    "the reliability sweep needs a reseeded Retrain row (a second `method: retrain` row) as its floor."
                )
            floor = _quantities(reseeded, reference)
            entry = {"ratio": ratio, "draw": draw, "forget_count": result["forget"]["count"], "rows": {}}
            for name, row in by_name.items():
                if name == result["reference"]:
                    continue
                values = _quantities(row, reference)
                entry["rows"][name] = {"values": values, "out_of_line": _flags(values, floor)}
            sets.append(entry)
            if progress:
                progress(f"forget set ratio {ratio} draw {draw}: done")
    names = list(sets[0]["rows"])
    summary: dict[str, Any] = {}
    lines = [
        "| method | number | mean | std | min | max | out of line (of sets) | agreement with majority |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        summary[name] = {}
        for key, title in QUANTITIES.items():
            values = [s["rows"][name]["values"][key] for s in sets]
            flags = [s["rows"][name]["out_of_line"][key] for s in sets]
            majority = max(sum(flags), len(flags) - sum(flags))
            summary[name][key] = {
                "mean": statistics.mean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
                "out_of_line": sum(flags),
                "agreement": majority / len(flags),
            }
            cell = summary[name][key]
            lines.append(
                f"| {name} | {title} | {cell['mean']:.3f} | {cell['std']:.3f} | {cell['min']:.3f} | {cell['max']:.3f}"
                f" | {cell['out_of_line']}/{len(flags)} | {100 * cell['agreement']:.0f} % |"
            )
    return {"ratios": ratios, "draws": draws, "models": models, "sets": sets, "summary": summary}, "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    from matplotlib.figure import Figure

    sets, names = result["sets"], list(result["sets"][0]["rows"])
    fig = Figure(figsize=(12, 6.5), dpi=90, layout="constrained")
    axes = fig.subplots(2, 2).flatten()
    panels = [
        ("single_run_mia_gap", "single run: |MIA-efficacy - Retrain's| (points)"),
        ("mia_gap", f"{result['models']} models: |mean MIA-efficacy - Retrain's| (points)"),
        ("klom_forget", "KLoM on D_f (mean over examples; 0 = like Retrain)"),
        ("ulira", "U-LiRA accuracy (0.5 = forgotten)"),
    ]
    labels = [f"{s['ratio']:.0%}\ndraw {s['draw']}" for s in sets]
    for ax, (key, title) in zip(axes, panels):
        for i, name in enumerate(names):
            values = [s["rows"][name]["values"][key] for s in sets]
            ax.plot(range(len(sets)), values, marker="o", linewidth=1.2, label=name, color=f"C{i}")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(sets)))
        ax.set_xticklabels(labels, fontsize=7)
        for boundary in range(len(result["draws"]), len(sets), len(result["draws"])):
            ax.axvline(boundary - 0.5, color="grey", linewidth=0.6, linestyle=":")
    axes[0].legend(fontsize=8)
    fig.suptitle("The same methods on forget sets of 9 / 10 / 11 % (three random draws each)", fontsize=10)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="benchmarks/configs/digits_population.yaml")
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.09, 0.10, 0.11])
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=None, help="Rows to run (the Retrain rows always run).")
    parser.add_argument("--tuned", default=None, help="Directory of benchmarks/tune.py's rows (random10.yaml).")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--cache-dir", default=".cache/population")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from benchmarks.population import population_config

    with open(args.config) as handle:
        config = population_config(yaml.safe_load(handle), args.tuned, args.train_size, args.test_size, args.epochs)
    rows = None
    if args.rows:
        rows = [n for n, s in config["methods"].items() if s["method"] == "retrain"] + list(args.rows)
    tic = time.perf_counter()
    result, table = run(
        config,
        args.ratios,
        args.draws,
        args.models,
        rows,
        args.cache_dir,
        progress=lambda line: print(f"[{time.perf_counter() - tic:7.0f} s] {line}", flush=True),
    )
    result["total_time_s"] = round(time.perf_counter() - tic, 1)
    if args.plot:
        plot(result, args.plot)
    emit("reliability", result, table, args.out)


if __name__ == "__main__":
    main()
