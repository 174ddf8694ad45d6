"""Validating the oracle-free tuner (``lightning-unlearn tune``) against the Retrain-tuned protocol.

    python -m benchmarks.tune_oracle_free --config benchmarks/configs/fmnist_cpu.yaml --scenario random10 \\
        --rows finetune random_label --budget 0.5 --json results/tune_oracle_free_cpu_random10.json \\
        --out-dir benchmarks/configs/tuned_cpu_oracle_free

Same validation request as ``benchmarks/tune.py`` (random 10 % with forget seed 1000, or class 2;
training seed 1000), same grid centres (the config's rows), but no Retrain: each row gets
:func:`lightning_unlearn.benchmark.tuning.tune_row` with ``--budget`` times one Retrain (estimated,
not trained). The chosen rows are written under their names plus ``ORACLE_FREE_SUFFIX`` to
``{out_dir}/{scenario}.yaml``; ``python -m benchmarks.quality --tuned {out_dir}`` reports them on the
requests the table reports (never tuned on), beside the Retrain-tuned rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from benchmarks.common import emit
from benchmarks.quality import SCENARIOS, scenario_config, select_rows
from benchmarks.tune import VALIDATION_CLASS, VALIDATION_SEED
from lightning_unlearn.benchmark.tuning import tune_config
from lightning_unlearn.report import json_safe

#: Suffix of an oracle-free row's name in the tuned YAML and the quality tables.
ORACLE_FREE_SUFFIX = "@oracle_free"


def run(
    config: dict[str, Any], scenario: str, rows: Optional[list[str]], budget: float, max_drop: float, progress: bool = True
) -> tuple[dict, str]:
    cfg = scenario_config(select_rows(config, rows), scenario, VALIDATION_SEED, validation_class=VALIDATION_CLASS)
    result = tune_config(cfg, rows, budget=budget, max_drop=max_drop, progress=progress)
    lines = [
        "| row | chosen (oracle-free) | epochs | score | feasible | trials | spent (s) | budget (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        chosen = row["chosen"]
        knobs = ", ".join(f"{k}={v}" for k, v in chosen["init_args"].items())
        knobs += "".join(
            f"; {c['callback']}: " + ", ".join(f"{k}={v}" for k, v in (c.get("init_args") or {}).items())
            for c in chosen.get("callbacks") or []
        )
        knobs += "".join(f"; {k}={v}" for k, v in (chosen.get("trainer") or {}).items())
        lines.append(
            f"| {name} | {knobs} | {chosen['max_epochs']} | {row['chosen_trial']['score']:.2f} | {row['feasible']} |"
            f" {len(row['trials'])} | {row['spent_s']:.0f} | {row['budget_s']:.0f} |"
        )
    out = {
        "scenario": scenario,
        "validation": cfg["data"]["init_args"]["forget"],
        "seed": VALIDATION_SEED,
        "budget": budget,
        "max_drop": max_drop,
        **json_safe(result),
    }
    return out, "\n".join(lines)


def write_rows(result: dict, out_dir: str, config_path: str) -> Path:
    """``{out_dir}/{scenario}.yaml``: the chosen rows as ``<row>@oracle_free`` (rows there and not
    re-tuned stay)."""
    path = Path(out_dir) / f"{result['scenario']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = yaml.safe_load(path.read_text())["methods"] if path.is_file() else {}
    rows.update({f"{name}{ORACLE_FREE_SUFFIX}": json.loads(json.dumps(spec)) for name, spec in result["chosen"].items()})
    header = (
        f"# Written by benchmarks/tune_oracle_free.py from {config_path}, scenario {result['scenario']}: chosen\n"
        f"# without a retrained model on the validation request {result['validation']} (seed {result['seed']}),\n"
        f"# budget {result['budget']} of one Retrain per row.\n"
    )
    path.write_text(header + yaml.safe_dump({"methods": rows}, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="benchmarks/configs/fmnist_cpu.yaml")
    parser.add_argument("--scenario", required=True, choices=list(SCENARIOS))
    parser.add_argument("--rows", nargs="+", default=None)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--out-dir", default="benchmarks/configs/tuned_cpu_oracle_free")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    result, table = run(config, args.scenario, args.rows, args.budget, args.max_drop, progress=False)
    emit("tune_oracle_free", result, table, args.json)
    print(f"wrote {write_rows(result, args.out_dir, args.config)}")


if __name__ == "__main__":
    main()
