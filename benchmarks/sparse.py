"""The two sparse-model papers' protocols on Fashion-MNIST, several seeds, and their tables.

    python -m benchmarks.sparse model_sparsity --config benchmarks/configs/sparse_cpu.yaml --seeds 0 1 2 \
        --out results/sparse_cpu.json --plot results/sparse_density.png
    python -m benchmarks.sparse unpruning --config benchmarks/configs/unpruning_cpu.yaml --seeds 0 1 2 \
        --out results/unpruning_cpu.json

``model_sparsity`` ("Model Sparsity Can Simplify Machine Unlearning", Jia et al., NeurIPS 2023): random 10 %
forgetting (forget seed = training seed = data order = the run's seed); the config's dense rows, and the
same rows on every sparse original of the density sweep (``--densities``, OMP over the conv weights,
added to the config's ``originals`` as ``omp{sparsity}``), each against its own Retrain. Prints the paper's
random-forgetting table (CIFAR-10, ResNet-18, its Table 3) next to ours, dense vs 95 %, and the Avg. Gap
of every method against the sparsity (``--plot``).

``unpruning`` ("The Right to be Forgotten in Pruning", Xiao et al., arXiv 2507.18725): for each scenario
(class-wise: class 0; random 10 %: forget seed = the run's seed), structure (unstructured; structured:
whole neurons of the hidden layers) and seed, one compare run of the config (the lottery-ticket original,
its Retrain and two noise-floor Retrains in other data orders, the unlearning rows), then the topology
table: IoU(original, reference) before, IoU(un-pruned, reference) after, the noise floor IoU(reference,
reference'), the gap closed ``(after - before) / (floor - before)``; and the metrics table.

A gap is *beyond noise* when ``floor - before`` exceeds twice the spread of the floor (the standard
deviation of the IoU over the three pairs of references, ``floor_spread``): below that, the deleted data left no topology
difference this many references can tell from chance, and "gap closed" is reported but not judged.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
import warnings
from collections import defaultdict
from typing import Any, Optional

import yaml

from benchmarks.common import emit, mean_std
from lightning_unlearn.benchmark import run_compare
from lightning_unlearn.metrics.keys import GAP_METRICS

#: The paper's Table 3, random data forgetting (CIFAR-10, ResNet-18, 10 trials): metric -> (dense, 95 % sparse),
#: read from the table image of the authors' project page; l1-sparse (dense only) from SalUn (Fan et al.,
#: ICLR 2024) Table 1, random 10 %, the same group's protocol. Avg. Gap = the paper's "Disparity Ave.".
PAPER = {
    "retrain": {
        "unlearning_accuracy": (5.41, 6.77),
        "mia_efficacy": (13.12, 14.17),
        "retain_acc": (100.00, 100.00),
        "test_acc": (94.42, 93.33),
        "avg_gap": (0.00, 0.00),
    },
    "finetune": {
        "unlearning_accuracy": (6.83, 5.97),
        "mia_efficacy": (14.97, 13.36),
        "retain_acc": (96.61, 96.99),
        "test_acc": (90.13, 90.29),
        "avg_gap": (2.74, 1.92),
    },
    "gradient_ascent": {
        "unlearning_accuracy": (7.54, 5.62),
        "mia_efficacy": (10.04, 11.76),
        "retain_acc": (93.31, 95.44),
        "test_acc": (89.28, 89.26),
        "avg_gap": (4.26, 3.05),
    },
    "fisher": {
        "unlearning_accuracy": (7.84, 8.16),
        "mia_efficacy": (9.52, 10.80),
        "retain_acc": (92.05, 92.29),
        "test_acc": (88.10, 87.79),
        "avg_gap": (5.08, 4.50),
    },
    "influence": {
        "unlearning_accuracy": (2.03, 6.51),
        "mia_efficacy": (5.07, 11.93),
        "retain_acc": (98.26, 94.94),
        "test_acc": (91.33, 88.74),
        "avg_gap": (4.07, 3.08),
    },
    "l1_sparse": {
        "unlearning_accuracy": (4.19, None),
        "mia_efficacy": (9.84, None),
        "retain_acc": (97.74, None),
        "test_acc": (91.59, None),
        "avg_gap": (2.26, None),
    },
}
STRUCTURED_PARAMETERS = r"fc[12]\.weight"


# ---------------------------------------------------------------------------------- model sparsity
def sparsity_config(config: dict[str, Any], seed: int, densities: list[float]) -> dict[str, Any]:
    """The compare config of one seed: random 10 % (forget seed = seed), training seed and data order
    ``seed``, the config's dense rows and a copy of them on every sparse original ``omp{s}``."""
    cfg = copy.deepcopy(config)
    cfg["seed"] = seed
    cfg["data"]["init_args"]["forget"] = {"ratio": 0.1, "seed": seed}
    cfg["data"]["init_args"]["shuffle_seed"] = seed
    template = next(iter(cfg.get("originals", {}).values()))
    originals, methods = {}, dict(cfg["methods"])
    for sparsity in densities:
        name = f"omp{round(100 * sparsity)}"
        originals[name] = {**template, "amount": sparsity}
        for row, spec in cfg["methods"].items():
            methods[f"{row}_{name}"] = {**copy.deepcopy(spec), "original": name}
    cfg["originals"], cfg["methods"] = originals, methods
    return cfg


def checkpoint(payload: dict, partial: Optional[str]) -> None:
    """Writes the runs so far to ``partial`` (a long benchmark keeps what it measured if stopped)."""
    if partial:
        import json

        with open(partial, "w") as handle:
            json.dump(payload, handle)


def run_model_sparsity(
    config: dict[str, Any], seeds: list[int], densities: list[float], rows: Optional[list[str]], partial: Optional[str] = None
) -> dict:
    if rows:
        config = {**config, "methods": {k: v for k, v in config["methods"].items() if k in rows or v["method"] == "retrain"}}
    runs = []
    for seed in seeds:
        tic = time.perf_counter()
        result = run_compare(sparsity_config(config, seed, densities))
        runs.append({"seed": seed, "result": result, "wall_s": round(time.perf_counter() - tic, 1)})
        print(f"[model_sparsity] seed {seed} done in {runs[-1]['wall_s']} s", flush=True)
        checkpoint({"seeds": seeds, "densities": densities, "runs": runs}, partial)
    return {"seeds": seeds, "densities": densities, "runs": runs}


def sparsity_cells(payload: dict) -> dict[str, dict[str, list[float]]]:
    """row name -> metric -> values over seeds (metrics in %, avg_gap, runtime_s; originals as ``original@name``)."""
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in payload["runs"]:
        result = run["result"]
        for row in result["rows"]:
            for key in [*GAP_METRICS, "avg_gap", "runtime_s"]:
                cells[row["name"]][key].append(row[key])
        cells["original@dense"]["retain_acc"].append(result["original"]["retain_acc"])
        cells["original@dense"]["test_acc"].append(result["original"]["test_acc"])
        for name, values in (result.get("originals") or {}).items():
            for key in ("retain_acc", "test_acc"):
                cells[f"original@{name}"][key].append(values[key])
    return cells


def paper_vs_ours(payload: dict, methods: list[str]) -> str:
    cells = sparsity_cells(payload)
    top = max(payload["densities"])
    sparse = f"omp{round(100 * top)}"
    metrics = [*GAP_METRICS, "avg_gap"]
    titles = [*GAP_METRICS.values(), "Avg. Gap"]
    header = (
        "| method | "
        + " | ".join(f"{t} paper dense / {round(100 * top)} %" for t in titles)
        + " | "
        + " | ".join(f"{t} ours dense / {round(100 * top)} %" for t in titles)
        + " |"
    )
    lines = [header, "|" + "---|" * (1 + 2 * len(titles))]
    for method in methods:
        paper = PAPER.get(method, {})
        cols = []
        for key in metrics:
            dense, sp = paper.get(key, (None, None))
            cols.append(" / ".join("-" if v is None else f"{v:.2f}" for v in (dense, sp)))
        for key in metrics:
            name = method if method != "retrain" else "retrain"
            dense = cells.get(name, {}).get(key)
            sp = cells.get(f"{name}_{sparse}", {}).get(key)
            cols.append(f"{mean_std(dense) if dense else '-'} / {mean_std(sp) if sp else '-'}")
        lines.append(f"| {method} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def sweep_table(payload: dict, methods: list[str]) -> str:
    cells = sparsity_cells(payload)
    densities = [0.0, *payload["densities"]]
    names = ["dense" if d == 0 else f"omp{round(100 * d)}" for d in densities]
    header = "| row | " + " | ".join(f"{round(100 * d)} %" for d in densities) + " |"
    lines = [header, "|" + "---|" * (1 + len(densities))]
    lines.append("| original TA (%) | " + " | ".join(mean_std(cells[f"original@{n}"]["test_acc"]) for n in names) + " |")
    lines.append(
        "| Retrain TA (%) | "
        + " | ".join(mean_std(cells["retrain" if n == "dense" else f"retrain_{n}"]["test_acc"]) for n in names)
        + " |"
    )
    for method in methods:
        if method == "retrain":
            continue
        vals = [cells.get(method if n == "dense" else f"{method}_{n}", {}).get("avg_gap") for n in names]
        lines.append(f"| {method} Avg. Gap | " + " | ".join(mean_std(v) if v else "-" for v in vals) + " |")
    return "\n".join(lines)


def sweep_plot(payload: dict, methods: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sparsity_cells(payload)
    densities = [0.0, *payload["densities"]]
    names = ["dense" if d == 0 else f"omp{round(100 * d)}" for d in densities]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        if method == "retrain":
            continue
        values = [cells.get(method if n == "dense" else f"{method}_{n}", {}).get("avg_gap") for n in names]
        xs = [100 * d for d, v in zip(densities, values) if v]
        means = [statistics.mean(v) for v in values if v]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values if v]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=method)
    ax.set_xlabel("sparsity of the conv weights (%)")
    ax.set_ylabel("Avg. Gap to its Retrain (points)")
    seeds = len({run["seed"] for run in payload["runs"]})
    ax.set_title(f"Fashion-MNIST, random 10 %, SmallCNN ({f'mean ± std, {seeds} seeds' if seeds > 1 else 'one seed'})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------- un-pruning
SCENARIOS = {"classwise": {"classes": [0]}, "random10": {"ratio": 0.1}}
STRUCTURES = ("unstructured", "structured")


def unpruning_config(config: dict[str, Any], scenario: str, structure: str, seed: int) -> dict[str, Any]:
    """The compare config of one (scenario, structure, seed): the forget request, the seeds (the
    pipeline's initialisation is drawn with ``seed``), the structure of the pipeline, the noise-floor
    rows' data orders ``seed + 1000`` and ``seed + 2000``."""
    cfg = copy.deepcopy(config)
    forget = dict(SCENARIOS[scenario])
    if "ratio" in forget:
        forget["seed"] = seed
    cfg["seed"] = seed
    cfg["data"]["init_args"]["forget"] = forget
    cfg["data"]["init_args"]["shuffle_seed"] = seed
    for original in cfg["originals"].values():
        original["init_seed"] = seed
        if structure == "structured":
            original.update(structured=True, parameters=STRUCTURED_PARAMETERS)
    offsets = iter((1000, 2000, 3000))
    for spec in cfg["methods"].values():
        if spec.get("reference") is not None and spec.get("shuffle_seed") is not None:
            spec["shuffle_seed"] = seed + next(offsets)
    return cfg


def run_unpruning(
    config: dict[str, Any], scenarios: list[str], structures: list[str], seeds: list[int], partial: Optional[str] = None
) -> dict:
    runs = []
    for scenario in scenarios:
        for structure in structures:
            for seed in seeds:
                tic = time.perf_counter()
                result = run_compare(unpruning_config(config, scenario, structure, seed))
                runs.append(
                    {
                        "scenario": scenario,
                        "structure": structure,
                        "seed": seed,
                        "result": result,
                        "wall_s": round(time.perf_counter() - tic, 1),
                    }
                )
                print(f"[unpruning] {scenario} {structure} seed {seed} done in {runs[-1]['wall_s']} s", flush=True)
                checkpoint({"seeds": seeds, "runs": runs}, partial)
    return {"seeds": seeds, "runs": runs}


def unpruning_tables(payload: dict) -> tuple[str, str, dict]:
    """(per-run topology table, metrics table, summary)."""
    topo_lines = [
        "| scenario | structure | seed | row | density | IoU before | IoU after | floor (± spread) | gap beyond noise | gap closed | un-pruning (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = defaultdict(lambda: defaultdict(list))
    metric_cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in payload["runs"]:
        result = run["result"]
        topology = result["topology"]
        for name, values in topology.items():
            if result_row(result, name)["method"] == "retrain":
                continue
            spread = values["floor_spread"]
            gap = values["floor"] - values["before"]
            beyond = gap > 2 * spread
            closed = values["gap_closed"]
            topo_lines.append(
                f"| {run['scenario']} | {run['structure']} | {run['seed']} | {name} | {values['density']:.3f} | {values['before']:.4f} |"
                f" {values['after']:.4f} | {values['floor']:.4f} ± {spread:.4f} | {'yes' if beyond else 'no'} ({gap:+.4f}) |"
                f" {'-' if closed != closed else f'{closed:.2f}'} | {values.get('topology_time_s', 0.0):.1f} |"
            )
            key = (run["scenario"], run["structure"], name)
            summary[key]["gap_closed"].append(closed)
            summary[key]["beyond"].append(beyond)
            summary[key]["before"].append(values["before"])
            summary[key]["after"].append(values["after"])
            summary[key]["floor"].append(values["floor"])
        for row in result["rows"]:
            key = (run["scenario"], run["structure"], row["name"])
            for metric in [*GAP_METRICS, "avg_gap", "runtime_s"]:
                metric_cells[key][metric].append(row[metric])
            if row["name"] in topology:
                metric_cells[key]["runtime_s"][-1] += topology[row["name"]].get("topology_time_s", 0.0)
    metric_lines = [
        "| scenario | structure | row | UA | RA | TA | MIA-Efficacy | Avg. Gap | RTE incl. un-pruning (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (scenario, structure, name), values in metric_cells.items():
        cols = [mean_std(values[k]) for k in [*GAP_METRICS, "avg_gap", "runtime_s"]]
        metric_lines.append(f"| {scenario} | {structure} | {name} | " + " | ".join(cols) + " |")
    flat = {f"{s}/{t}/{n}": {k: v for k, v in d.items()} for (s, t, n), d in summary.items()}
    return "\n".join(topo_lines), "\n".join(metric_lines), flat


def result_row(result: dict, name: str) -> dict:
    return next(row for row in result["rows"] if row["name"] == name)


def unpruning_summary_table(summary: dict) -> str:
    lines = [
        "| scenario | structure | row | IoU before | IoU after | floor | gap closed (mean; per seed) | seeds with a gap beyond noise |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, values in summary.items():
        scenario, structure, name = key.split("/")
        closed = values["gap_closed"]
        per_seed = ", ".join("nan" if c != c else f"{c:.2f}" for c in closed)
        finite = [c for c in closed if c == c]
        lines.append(
            f"| {scenario} | {structure} | {name} | {mean_std(values['before'])} | {mean_std(values['after'])} |"
            f" {mean_std(values['floor'])} | {statistics.mean(finite) if finite else float('nan'):.2f}; {per_seed} |"
            f" {sum(values['beyond'])} of {len(values['beyond'])} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=["model_sparsity", "unpruning"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--densities",
        type=float,
        nargs="+",
        default=[0.5, 0.8, 0.9, 0.95],
        help="model_sparsity: the sparsities of the sweep (the largest is the table's).",
    )
    parser.add_argument("--rows", nargs="+", default=None, help="model_sparsity: only these rows (and Retrain).")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=list(STRUCTURES))
    parser.add_argument("--plot", default=None, help="model_sparsity: where to write the density-sweep plot (PNG).")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--tables-from",
        nargs="+",
        default=None,
        help="Re-render the tables (and --plot) from JSONs written by --out (runs merged, e.g. one per seed), without running.",
    )
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*does not know the values of the pruned weights.*")
    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    partial = f"{args.out}.partial" if args.out else None
    loaded = None
    if args.tables_from:
        import json

        parts = [json.loads(open(path).read()) for path in args.tables_from]
        loaded = {
            **parts[0],
            "runs": [run for part in parts for run in part["runs"]],
            "seeds": sorted({s for part in parts for s in part["seeds"]}),
        }
    if args.protocol == "model_sparsity":
        payload = loaded or run_model_sparsity(config, args.seeds, args.densities, args.rows, partial)
        methods = [name for name in config["methods"] if args.rows is None or name in args.rows or name == "retrain"]
        table = "Paper (CIFAR-10, ResNet-18) vs ours (Fashion-MNIST, SmallCNN), random 10 %:\n\n" + paper_vs_ours(
            payload, methods
        )
        table += "\n\nDensity sweep (mean ± std over seeds):\n\n" + sweep_table(payload, methods)
        if args.plot:
            sweep_plot(payload, methods, args.plot)
    else:
        payload = loaded or run_unpruning(config, args.scenarios, args.structures, args.seeds, partial)
        topo, metrics, summary = unpruning_tables(payload)
        payload["summary"] = summary
        table = "Topology (per run):\n\n" + topo + "\n\nTopology (over seeds):\n\n" + unpruning_summary_table(summary)
        table += "\n\nMetrics (mean ± std over seeds):\n\n" + metrics
    if loaded is not None:
        print(table)
        return
    emit(f"sparse_{args.protocol}", payload, table, args.out)


if __name__ == "__main__":
    main()
