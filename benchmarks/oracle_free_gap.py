"""How far the oracle-free choices land from the Retrain-tuned ones, on the validation request.

    python -m benchmarks.oracle_free_gap --oracle-free results/tune_oracle_free_cpu_random10.json \\
        --trials results/tune_cpu_random10.json [results/tune_cpu_random10_retuned.json] \\
        [--out results/oracle_free_gap_cpu_random10.json]

benchmarks/tune.py evaluates every grid point against a Retrain of the validation request and keeps
each trial (``row``, ``init_args``, ``callbacks``, ``epochs``, ``avg_gap``);
benchmarks/tune_oracle_free.py chooses on the same request without a Retrain. For each row this
looks the oracle-free choice up among the Retrain-tuned trials (same knobs, same epochs) and
reports ``avg_gap(oracle-free choice) - min avg_gap(trials)``: what not having an oracle costs, in
Avg. Gap points, on the request both tuned on. Later ``--trials`` files win for rows they hold
(rows re-tuned after a code change). A choice outside the Retrain grid is reported as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import emit


def _key(init_args: dict, callbacks: Optional[list], epochs: int) -> str:
    calls = [{"callback": c["callback"], "init_args": c.get("init_args") or {}} for c in callbacks or []]
    return json.dumps([init_args, calls, int(epochs)], sort_keys=True)


def compare(oracle_free: dict[str, Any], trial_files: list[dict[str, Any]]) -> tuple[dict, str]:
    trials: dict[str, list[dict]] = {}
    for data in trial_files:
        by_row: dict[str, list[dict]] = {}
        for trial in data["trials"]:
            by_row.setdefault(trial["row"], []).append(trial)
        trials.update(by_row)  # a later file's rows replace an earlier file's
    rows, lines = (
        {},
        [
            "| row | oracle-free choice | its Avg. Gap | Retrain-tuned choice | its Avg. Gap | difference |",
            "|---|---|---|---|---|---|",
        ],
    )
    for name, chosen in oracle_free["chosen"].items():
        grid = [t for t in trials.get(name, []) if "avg_gap" in t]
        if not grid:
            continue
        best = min(grid, key=lambda t: t["avg_gap"])
        key = _key(chosen["init_args"], chosen.get("callbacks"), chosen["max_epochs"])
        match = next((t for t in grid if _key(t["init_args"], t.get("callbacks"), t["epochs"]) == key), None)
        gap = None if match is None else round(match["avg_gap"] - best["avg_gap"], 2)
        rows[name] = {
            "oracle_free": chosen,
            "oracle_free_avg_gap": None if match is None else match["avg_gap"],
            "retrain_tuned": {k: best[k] for k in ("init_args", "callbacks", "epochs")},
            "retrain_tuned_avg_gap": best["avg_gap"],
            "difference": gap,
        }

        def fmt(args: dict, callbacks: Optional[list], epochs: int) -> str:
            knobs = ", ".join(f"{k}={v}" for k, v in args.items() if k != "lr_scheduler")
            knobs += "".join("; " + ", ".join(f"{k}={v}" for k, v in (c.get("init_args") or {}).items()) for c in callbacks or [])
            return f"{knobs}, {epochs} ep"

        mine = "outside the grid" if match is None else f"{match['avg_gap']:.2f}"
        lines.append(
            f"| {name} | {fmt(chosen['init_args'], chosen.get('callbacks'), chosen['max_epochs'])} | {mine} |"
            f" {fmt(best['init_args'], best.get('callbacks'), best['epochs'])} | {best['avg_gap']:.2f} |"
            f" {'-' if gap is None else f'{gap:+.2f}'} |"
        )
    return {"scenario": oracle_free.get("scenario"), "validation": oracle_free.get("validation"), "rows": rows}, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--oracle-free", required=True, help="benchmarks/tune_oracle_free.py JSON.")
    parser.add_argument("--trials", nargs="+", required=True, help="benchmarks/tune.py JSON(s); later files win per row.")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result, table = compare(
        json.loads(Path(args.oracle_free).read_text()), [json.loads(Path(p).read_text()) for p in args.trials]
    )
    emit("oracle_free_gap", result, table, args.out)


if __name__ == "__main__":
    main()
