"""Sequential deletion requests: every row of a sequential config over a chain of requests, with
relapse on the earlier forget sets after each step, plotted per step.

    python -m benchmarks.sequential --config benchmarks/configs/sequential/fmnist_cpu.yaml \
        --out results/sequential_fmnist.json --plot results/sequential_fmnist.png \
        [--reports-dir results/sequential_fmnist_reports]
    python -m benchmarks.sequential --from-json results/sequential_fmnist.json --plot results/sequential_fmnist.png

The pipeline is :func:`lightning_unlearn.benchmark.sequential.run_sequential` (also
``lightning-unlearn sequential``); this script adds the JSON envelope and the relapse plot: per
step, the mean forget accuracy and MIA-efficacy on the earlier forget sets, one line per row.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import emit
from lightning_unlearn.benchmark.sequential import format_sequential_tables, run_sequential


def run(config: Any, reports_dir: str | None = None) -> tuple[dict, str]:
    """Runs the chain; ``config`` is a path or a mapping."""
    if not isinstance(config, Mapping):
        config = yaml.safe_load(open(config))
    config = dict(config)
    if reports_dir is not None:
        config["output_dir"] = reports_dir
    result = run_sequential(config)
    return result, format_sequential_tables(result)


def plot(result: Mapping[str, Any], path: str) -> None:
    """Per step: relapse as the mean change since each earlier request was unlearned, of the
    accuracy (left; up = relapse) and of the MIA-efficacy (middle; down = relapse) on the earlier
    forget sets, and the current request's Avg. Gap to that step's Retrain (right). A row and its
    KeepForgotten variant (name containing "keep") share a colour; the variant is dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = list(range(1, len(result["steps"])))
    colours: dict[str, Any] = {}
    for name, chain in result["rows"].items():
        base = name.split("_keep")[0]
        colour = colours.setdefault(base, f"C{len(colours)}")
        style = "--" if "keep" in name else "-"
        kwargs = dict(color=colour, linestyle=style, marker="o", label=name)
        axes[0].plot(steps, [row["relapse_mean"]["delta_forget_acc"] for row in chain[1:]], **kwargs)
        axes[1].plot(steps, [row["relapse_mean"]["delta_mia"] for row in chain[1:]], **kwargs)
        axes[2].plot(range(len(chain)), [row["avg_gap"] for row in chain], **kwargs)
    axes[0].set_ylabel("change of accuracy on earlier forget sets (points)")
    axes[1].set_ylabel("change of MIA-efficacy on earlier forget sets (points)")
    axes[2].set_ylabel("Avg. Gap to Retrain of the step (points)")
    titles = ("relapse: accuracy (up = relapse)", "relapse: MIA-efficacy (down = relapse)", "the current request")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("after step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="benchmarks/configs/sequential/fmnist_cpu.yaml")
    parser.add_argument("--reports-dir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--from-json", default=None, help="Re-plot and re-print a previous --out file (no training).")
    args = parser.parse_args()
    if args.from_json:
        import json

        result = json.loads(Path(args.from_json).read_text())
        print(format_sequential_tables(result))
    else:
        result, table = run(args.config, args.reports_dir)
        emit("sequential", result, table, args.out)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
