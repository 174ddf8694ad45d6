"""Sequential deletion requests: every row of a sequential config over a chain of requests, with
relapse on the earlier forget sets after each step, plotted per step.

    python -m benchmarks.sequential --config benchmarks/configs/sequential/fmnist_cpu.yaml \
        --out results/sequential_fmnist.json --plot results/sequential_fmnist.png \
        [--reports-dir results/sequential_fmnist_reports]

The pipeline is :func:`lightning_unlearn.benchmark.sequential.run_sequential` (also
``lightning-unlearn sequential``); this script adds the JSON envelope and the relapse plot: per
step, the mean forget accuracy and MIA-efficacy on the earlier forget sets, one line per row.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping

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
    """Relapse per step: mean accuracy (left) and MIA-efficacy (right) on the earlier forget sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    steps = list(range(1, len(result["steps"])))
    for name, chain in result["rows"].items():
        style = "--" if "keep" in name else "-"
        acc = [row["relapse_mean"]["forget_acc"] for row in chain[1:]]
        mia = [row["relapse_mean"]["mia_efficacy"] for row in chain[1:]]
        axes[0].plot(steps, acc, style, marker="o", label=name)
        axes[1].plot(steps, mia, style, marker="o", label=name)
        axes[2].plot(range(len(chain)), [row["avg_gap"] for row in chain], style, marker="o", label=name)
    axes[0].set_ylabel("accuracy on earlier forget sets (%)")
    axes[1].set_ylabel("MIA-efficacy on earlier forget sets (%)")
    axes[2].set_ylabel("Avg. Gap to Retrain of the step (points)")
    for ax, title in zip(axes, ("relapse: accuracy (up = relapse)", "relapse: MIA-efficacy (down = relapse)",
                                "current request")):
        ax.set_xlabel("after step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="benchmarks/configs/sequential/fmnist_cpu.yaml")
    parser.add_argument("--reports-dir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    result, table = run(args.config, args.reports_dir)
    emit("sequential", result, table, args.out)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
