"""Per-example audits over model populations (KLoM, the NeurIPS 2023 challenge score, U-LiRA)
beside the population means of UA, RA, TA, MIA-efficacy and the best threshold attack's AUC.

    python -m benchmarks.population --config benchmarks/configs/digits_population.yaml --models 8 \\
        --out results/population_digits.json
    python -m benchmarks.population --config benchmarks/configs/fmnist_cpu.yaml --tuned benchmarks/configs/tuned_cpu \\
        --models 16 --train-size 10000 --test-size 2000 --epochs 8 --out results/population_fmnist.json

N originals, N oracles (Retrain) and N unlearned models per row, seeds ``seed .. seed + N - 1``, on
one forget set (the config's; with ``--tuned`` the random-10 % request of benchmarks/quality.py,
forget seed 0, and the rows benchmarks/tune.py chose). Models, margins and metrics are cached in
``--cache-dir`` (a second run, or a new row, costs only its own unlearning). ``--train-size``,
``--test-size`` and ``--epochs`` shrink the config (the training set, the test set, the epochs of
the original and of Retrain) to fit a CPU budget; the README says which were used.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from typing import Any, Optional

import torch
import yaml

from benchmarks.common import emit
from lightning_unlearn.benchmark.population import population_table, run_population


def population_config(
    config: dict[str, Any],
    tuned: Optional[str] = None,
    train_size: Optional[int] = None,
    test_size: Optional[int] = None,
    epochs: Optional[int] = None,
    rows: Optional[list[str]] = None,
) -> dict[str, Any]:
    """The compare config of the population: the tuned random-10 % rows when ``tuned`` is given,
    a smaller training/test set and fewer epochs of the original and Retrain when asked."""
    cfg = copy.deepcopy(config)
    if tuned is not None:
        from benchmarks.quality import scenario_config

        cfg = scenario_config(cfg, "random10", int(cfg.get("seed", 0)), tuned=tuned)
    init = cfg["data"]["init_args"]
    if train_size is not None:
        init["train_size"] = train_size
    if test_size is not None:
        init["test_size"] = test_size
    if epochs is not None:
        cfg["original"]["max_epochs"] = epochs
    if rows:
        from benchmarks.quality import select_rows

        # the Retrain rows always run: the reference and the reseeded one (every number's noise floor)
        cfg = select_rows(cfg, [n for n, s in cfg["methods"].items() if s["method"] == "retrain"] + list(rows))
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="benchmarks/configs/digits_population.yaml")
    parser.add_argument("--models", type=int, default=8, help="N: originals, oracles and unlearned models per row.")
    parser.add_argument("--tuned", default=None, help="Directory of benchmarks/tune.py's rows (random10.yaml).")
    parser.add_argument(
        "--rows", nargs="+", default=None, help="Only these rows (and the Retrain rows: the reference and the reseeded floor)."
    )
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="Epochs of the original and of Retrain.")
    parser.add_argument("--cache-dir", default=".cache/population")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    cfg = population_config(config, args.tuned, args.train_size, args.test_size, args.epochs, args.rows)
    tic = time.perf_counter()
    result = run_population(
        cfg,
        models=args.models,
        cache_dir=args.cache_dir,
        progress=lambda line: print(f"[{time.perf_counter() - tic:7.0f} s] {line}", flush=True),
    )
    result["total_time_s"] = round(time.perf_counter() - tic, 1)
    result["settings"] = {
        "config": args.config,
        "tuned": args.tuned,
        "train_size": args.train_size,
        "test_size": args.test_size,
        "epochs": args.epochs,
    }
    emit("population", result, population_table(result), args.out)


if __name__ == "__main__":
    main()
