"""The cost of unlearning against its quality: Avg. Gap to Retrain vs seconds, % of Retrain's time
and epochs-equivalent of D, with the Pareto frontier, from ``benchmarks/quality.py`` results.

    python -m benchmarks.pareto --quality results/quality_cpu_random10_v2.json results/quality_cpu_classwise_v2.json \\
        --out results/pareto_cpu.json --plot results/pareto_cpu.png

A row is on the frontier when no other row of its scenario is both cheaper (% of Retrain's time,
three-seed mean) and closer to Retrain (Avg. Gap, mean). The target line is Avg. Gap 1.0 at 5 % of
Retrain's time; the table marks the rows that meet it. ``retrain``/``retrain_reseeded`` are the
reference and the chance floor (100 % of the cost by definition) and are drawn but never on the
frontier.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import emit

REFERENCE_ROWS = ("retrain", "retrain_reseeded")
TARGET_GAP, TARGET_COST = 1.0, 5.0


def points(quality: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per scenario, one point per row: mean Avg. Gap (and std), seconds, % of Retrain, epochs of D."""
    out: dict[str, list[dict[str, Any]]] = {}
    for scenario, rows in quality["summary"].items():
        for name, cells in rows.items():
            point = {
                "row": name,
                "avg_gap": cells["avg_gap"]["mean"],
                "avg_gap_std": cells["avg_gap"]["std"],
                "seconds": cells["runtime_s"]["mean"],
                "percent_of_retrain": cells["time_vs_retrain"]["mean"],
                "epochs_of_d": cells.get("epochs_equivalent", {}).get("mean"),
            }
            out.setdefault(scenario, []).append(point)
    return out


def frontier(rows: list[dict[str, Any]], cost: str = "percent_of_retrain") -> list[str]:
    """Names of the rows no other row beats on both cost and Avg. Gap (reference rows excluded)."""
    candidates = [r for r in rows if r["row"] not in REFERENCE_ROWS]
    kept = []
    for r in candidates:
        dominated = any(
            o is not r
            and o[cost] <= r[cost]
            and o["avg_gap"] <= r["avg_gap"]
            and (o[cost] < r[cost] or o["avg_gap"] < r["avg_gap"])
            for o in candidates
        )
        if not dominated:
            kept.append(r["row"])
    return sorted(kept, key=lambda name: next(r[cost] for r in candidates if r["row"] == name))


def run(paths: list[str]) -> tuple[dict[str, Any], str]:
    merged: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        for scenario, rows in points(json.loads(Path(path).read_text())).items():
            merged.setdefault(scenario, []).extend(rows)
    lines = [
        "| scenario | row | Avg. Gap | RTE (s) | RTE (% of Retrain) | epochs of D | frontier | ≤ 1.0 at ≤ 5 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    result = {"target": {"avg_gap": TARGET_GAP, "percent_of_retrain": TARGET_COST}, "scenarios": {}}
    for scenario, rows in merged.items():
        front = frontier(rows)
        rows.sort(key=lambda r: r["percent_of_retrain"])
        meets = [
            r["row"]
            for r in rows
            if r["row"] not in REFERENCE_ROWS and r["avg_gap"] <= TARGET_GAP and r["percent_of_retrain"] <= TARGET_COST
        ]
        closest = min(
            (r for r in rows if r["row"] not in REFERENCE_ROWS and r["percent_of_retrain"] <= TARGET_COST),
            key=lambda r: r["avg_gap"],
            default=None,
        )
        result["scenarios"][scenario] = {
            "points": rows,
            "frontier": front,
            "meets_target": meets,
            "closest_within_5_percent": closest,
        }
        for r in rows:
            epochs = "-" if r["epochs_of_d"] is None else f"{r['epochs_of_d']:.2f}"
            lines.append(
                f"| {scenario} | {r['row']} | {r['avg_gap']:.2f} ± {r['avg_gap_std']:.2f} | {r['seconds']:.1f} |"
                f" {r['percent_of_retrain']:.1f} | {epochs} | {'yes' if r['row'] in front else ''} |"
                f" {'yes' if r['row'] in meets else ''} |"
            )
    return result, "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(result["scenarios"])
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.8), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        data = result["scenarios"][scenario]
        rows = [r for r in data["points"] if r["row"] not in REFERENCE_ROWS]
        front = [next(r for r in rows if r["row"] == name) for name in data["frontier"]]
        ax.scatter([r["percent_of_retrain"] for r in rows], [r["avg_gap"] for r in rows], s=22, color="tab:blue", zorder=3)
        for r in rows:
            ax.annotate(
                r["row"],
                (r["percent_of_retrain"], r["avg_gap"]),
                fontsize=6.5,
                xytext=(3, 2),
                textcoords="offset points",
                color="dimgray",
            )
        ax.step(
            [r["percent_of_retrain"] for r in front],
            [r["avg_gap"] for r in front],
            where="post",
            color="tab:red",
            lw=1.5,
            label="Pareto frontier",
            zorder=2,
        )
        floor = next((r for r in data["points"] if r["row"] == "retrain_reseeded"), None)
        if floor is not None:
            ax.axhline(
                floor["avg_gap"], color="gray", ls=":", lw=1, label=f"chance floor (Retrain reseeded) {floor['avg_gap']:.2f}"
            )
        ax.axhline(TARGET_GAP, color="tab:green", ls="--", lw=1)
        ax.axvline(TARGET_COST, color="tab:green", ls="--", lw=1, label="target: Avg. Gap 1.0 at 5 % of Retrain")
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
        ax.set_xlabel("unlearning time, % of Retrain's (log)")
        ax.set_ylabel("Avg. Gap to Retrain (points)")
        ax.set_title(f"Fashion-MNIST, {scenario} (3 seeds, mean)")
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", nargs="+", required=True, help="benchmarks/quality.py JSON files.")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    result, table = run(args.quality)
    emit("pareto", result, table, args.out)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
