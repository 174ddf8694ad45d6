"""Per-example audits over model populations: KLoM, the NeurIPS 2023 challenge score and U-LiRA.

:func:`run_population` takes a compare config and trains, for seeds ``s = seed, seed + 1, ...,
seed + N - 1`` on the config's one datamodule (the same forget set and the same splits for
every model, as the protocol requires):

* **N originals** — the config's network re-initialised from ``s`` and trained on D (forget set
  included) with data order ``s`` (:func:`~lightning_unlearn.benchmark.train_original`);
* **N oracles** — the config's Retrain row from each original (:func:`run_row`, initial weights
  ``s``);
* **N unlearned models per row** — each original unlearned by the row's method (:func:`run_row`,
  seed ``s``). A row of the Retrain method other than the reference (``retrain_reseeded``) is
  retrained from initial weights ``s + 1000``: a perfect unlearner, whose numbers are the noise
  floor of every other row.

Every model is evaluated once with ``audits="standard"`` (the evaluation pass that also yields
the attacks and every example's margin), and its margins, metrics and audit numbers are cached
under ``cache_dir/<config hash>/`` (oracles also as weights; the originals' weights under
``cache_dir/originals-<hash>/``, shared by every forget request on the same data, network and
training): a second run, or a new row, costs only its own unlearning; another forget set of the
same data costs its oracles and rows, not its originals. Offline, per row: KLoM of every forget, retain and test
example against the oracles (summarised per split), the challenge score and U-LiRA on the forget
set, the population means of UA, RA, TA, MIA-efficacy and of the best threshold attack's AUC,
and an ``audit_summary`` (each number beside its ideal and the reseeded row's distance to it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from lightning_unlearn import registry
from lightning_unlearn.benchmark.config import REFERENCE, MethodSpec, load_config, parse_config
from lightning_unlearn.benchmark.runner import quiet_fit_warnings, run_row, train_original, trainer_options
from lightning_unlearn.metrics.evaluation import evaluate_pass
from lightning_unlearn.metrics.functional.population import challenge_score, epsilon_scores, klom, summarise, ulira
from lightning_unlearn.metrics.keys import (
    BEST_AUC,
    CHALLENGE_SCORE,
    EPSILON_MEAN,
    GAP_METRICS,
    KLOM_MEAN,
    METRICS,
    ULIRA_ACCURACY,
)
from lightning_unlearn.models.network import copy_network, reinitialise
from lightning_unlearn.report import json_safe, versions
from lightning_unlearn.report.audit import audit_summary
from lightning_unlearn.validation import check_int

__all__ = ["RESEEDED_OFFSET", "population_table", "run_population"]

#: A non-reference Retrain row is retrained from initial weights ``seed + RESEEDED_OFFSET``.
RESEEDED_OFFSET = 1000
_SPLITS = ("forget", "retain", "test")
_METRIC_KEYS = [*GAP_METRICS, *(k for k in METRICS if k not in GAP_METRICS)]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(json_safe(value), sort_keys=True).encode()).hexdigest()[:16]


def _config_keys(config: Any, specs: dict[str, MethodSpec], reference: str) -> tuple[str, str]:
    """``(originals key, rows key)``: the originals depend on the data, network and training
    alone, not on the forget request (they train on all of D), so forget sets share them."""
    cfg = parse_config(config, instantiate=False)
    as_dict = cfg.as_dict() if hasattr(cfg, "as_dict") else dict(cfg)
    keep = {k: copy.deepcopy(as_dict.get(k)) for k in ("data", "model", "original", "accelerator", "precision", "mia_backend")}
    data = keep["data"] or {}
    forget = (data.get("init_args") or {}).pop("forget", None)
    originals = _digest(keep)
    keep.update(forget=forget, reference=asdict(specs[reference]))
    return originals, _digest(keep)


def _save(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def _load(path: Path) -> Optional[dict[str, Any]]:
    return _read(path) if path.is_file() else None


def _read(path: Path) -> dict[str, Any]:
    """A saved record that must exist (raises FileNotFoundError otherwise)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _numbers(block: Optional[dict[str, Any]]) -> dict[str, float]:
    return {k: float(v) for k, v in (block or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_population(
    config: Any,
    *,
    models: int = 8,
    rows: Optional[Sequence[str]] = None,
    cache_dir: Union[str, Path] = ".cache/population",
    seed: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> dict[str, Any]:
    """Runs (or reads from the cache) a model population and computes the per-example audits.

    Args:
        config: a compare config (YAML path, mapping or Namespace), as for ``lightning-unlearn compare``.
        models: N, the number of originals, of oracles and of unlearned models per row (>= 3).
        rows: the rows to run (default: every row); the Retrain reference always runs.
        cache_dir: where models, margins and metrics are kept between runs.
        seed: the first seed (default: the config's ``seed``).
        progress: called with a line after each model (e.g. ``print``).

    Returns:
        ``{"config", "forget", "models", "seeds", "rows", "reference", "reseeded_row", "cache",
        "times", "versions"}``; each row holds the population means (and standard deviations) of
        the metrics in percent, ``klom`` per split (mean, median, p95), ``challenge_score``,
        ``epsilon_mean``, ``ulira_accuracy``, ``best_auc`` (mean over the models of the best
        threshold attack's forget-vs-test AUC), ``runtime_s`` (mean unlearning time), ``per_model``
        (each model's metrics in percent and best AUC, in seed order) and its ``audit_summary``.

    Raises:
        ValueError: an invalid config, ``models < 3`` or an unknown row.
    """
    models = check_int(models, "models", minimum=3, hint="at least 3 models per population (U-LiRA holds one out)")
    say = progress or (lambda line: None)
    cfg, specs, original_spec = load_config(config)
    datamodule, network = cfg.data, cfg.model
    options = trainer_options(cfg)
    mia_backend = cfg.mia_backend
    first = int(cfg.seed if seed is None else seed)
    seeds = list(range(first, first + models))
    reference = next(name for name, spec in specs.items() if spec.method == REFERENCE)
    chosen = list(specs) if rows is None else [reference] + [r for r in rows if r != reference]
    unknown = [r for r in chosen if r not in specs]
    if unknown:
        raise ValueError(f"rows {unknown} are not in the config; its rows are {list(specs)}.")
    originals_key, rows_key = _config_keys(config, specs, reference)
    root, originals_root = Path(cache_dir) / rows_key, Path(cache_dir) / f"originals-{originals_key}"
    times: dict[str, float] = {"originals_s": 0.0, "oracles_s": 0.0}
    base_shuffle = datamodule.shuffle_seed

    def evaluate_model(model: nn.Module) -> dict[str, Any]:
        result = evaluate_pass(model, datamodule.evaluation_dataloaders(), mia_backend=mia_backend)
        return {"margins": result.margins, "metrics": result.metrics, "audit": _numbers(result.audit)}

    originals: list[nn.Module] = []
    oracles: list[dict[str, Any]] = []
    with quiet_fit_warnings():
        for i, s in enumerate(seeds):
            path = originals_root / f"{s}.pt"
            cached = _load(path)
            net = reinitialise(copy_network(network), seed=s)
            if cached is None:
                tic = time.perf_counter()
                datamodule.shuffle_seed = s
                train_original(net, datamodule, original_spec, s, **options)
                datamodule.shuffle_seed = base_shuffle
                times["originals_s"] += time.perf_counter() - tic
                cached = {"weights": net.state_dict()}
                _save(path, cached)
            net.load_state_dict(cached["weights"])
            originals.append(net.eval())
            measured = root / "originals" / f"{s}.pt"  # the original on this request's splits
            if not measured.is_file():
                _save(measured, evaluate_model(net))
                say(f"original {i + 1}/{models} (seed {s}): {_brief(_read(measured)['metrics'])}")

        def row_run(name: str, index: int, s: int) -> dict[str, Any]:
            spec = copy.deepcopy(specs[name])
            if spec.method == REFERENCE:
                spec.init_args = {**spec.init_args, "init_seed": s if name == reference else s + RESEEDED_OFFSET}
            path = root / "rows" / f"{name}-{_digest(asdict(spec))}" / f"{s}.pt"
            cached = _load(path)
            if cached is None:
                datamodule.shuffle_seed = s
                oracle = None
                if name != reference and hasattr(registry.get(spec.method).cls, "use_reference"):
                    oracle = copy_network(network)  # e.g. OracleMatching(oracle="reference"): this seed's oracle
                    oracle.load_state_dict(oracles[index]["weights"])
                run = run_row(
                    spec, originals[index], datamodule, s, reference=oracle, mia_backend=mia_backend, audits="standard", **options
                )
                datamodule.shuffle_seed = base_shuffle
                evaluation = run.evaluated
                cached = {
                    "margins": evaluation.margins["after"],
                    "metrics": dict(run.after),
                    "audit": _numbers((evaluation.audit or {}).get("after")),
                    "runtime_s": float(run.runtime_s),
                }
                if name == reference:
                    cached["weights"] = run.model.state_dict()
                _save(path, cached)
                say(f"{name} {index + 1}/{models} (seed {s}): {_brief(cached['metrics'])}, {cached['runtime_s']:.1f} s")
            return cached

        tic = time.perf_counter()
        for i, s in enumerate(seeds):
            oracles.append(row_run(reference, i, s))
        times["oracles_s"] = time.perf_counter() - tic
        runs: dict[str, list[dict[str, Any]]] = {reference: oracles}
        for name in chosen:
            if name == reference:
                continue
            tic = time.perf_counter()
            runs[name] = [row_run(name, i, s) for i, s in enumerate(seeds)]
            times[f"{name}_s"] = time.perf_counter() - tic

    oracle_margins = {split: torch.stack([o["margins"][split] for o in oracles]).double() for split in _SPLITS}
    reseeded = next((n for n in chosen if n != reference and specs[n].method == REFERENCE), None)
    results = {name: _row_numbers(name, specs[name], runs[name], oracles, oracle_margins, name == reference) for name in chosen}
    floor = results.get(reseeded) if reseeded is not None else None
    counts = {split: int(oracle_margins[split].shape[1]) for split in _SPLITS}
    for name, row in results.items():
        row["audit_summary"] = [] if name == reference else _population_summary(row, results[reference], floor, counts)
    original_runs = [_read(root / "originals" / f"{s}.pt") for s in seeds]
    return {
        "config": {
            "seed": first,
            "models": models,
            "data": {"class": type(datamodule).__name__, "forget": datamodule.forget.to_dict()},
            "model": type(network).__name__,
            "original": asdict(original_spec),
            "methods": {n: json_safe(asdict(specs[n])) for n in chosen},
        },
        "forget": datamodule.forget_summary(),
        "models": models,
        "seeds": seeds,
        "original": _mean_metrics([o["metrics"] for o in original_runs]),
        "reference": reference,
        "reseeded_row": reseeded,
        "rows": [results[n] for n in chosen],
        "cache": str(root),
        "times": {k: round(v, 1) for k, v in times.items()},
        "versions": versions(),
    }


def _brief(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{title} {100.0 * float(metrics[key]):.2f}" for key, title in GAP_METRICS.items())


def _mean_metrics(blocks: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {k: round(100.0 * statistics.mean(float(b[k]) for b in blocks), 2) for k in _METRIC_KEYS}


def _row_numbers(
    name: str,
    spec: MethodSpec,
    runs: list[dict[str, Any]],
    oracles: list[dict[str, Any]],
    oracle_margins: dict[str, Tensor],
    is_reference: bool,
) -> dict[str, Any]:
    unlearned = {split: torch.stack([r["margins"][split] for r in runs]).double() for split in _SPLITS}
    metric_keys = _METRIC_KEYS
    row: dict[str, Any] = {
        "name": name,
        "method": spec.method,
        "max_epochs": int(spec.max_epochs),
        "init_args": json_safe(spec.init_args),
        "callbacks": json_safe(spec.callbacks),
        "models": len(runs),
    }
    for key in metric_keys:
        values = [100.0 * float(r["metrics"][key]) for r in runs]
        row[key] = round(statistics.mean(values), 2)
        row[f"{key}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else 0.0
    oracle_means = {k: statistics.mean(100.0 * float(o["metrics"][k]) for o in oracles) for k in GAP_METRICS}
    row["gap"] = {k: round(abs(row[k] - oracle_means[k]), 2) for k in GAP_METRICS}
    row["avg_gap"] = round(statistics.mean(row["gap"].values()), 2)
    aucs = [r["audit"].get(BEST_AUC) for r in runs]
    aucs = [a for a in aucs if a is not None]
    row["best_auc"] = round(statistics.mean(aucs), 4) if aucs else None
    row["best_auc_std"] = round(statistics.stdev(aucs), 4) if len(aucs) > 1 else 0.0
    row["runtime_s"] = round(statistics.mean(float(r.get("runtime_s", 0.0)) for r in runs), 3)
    row["per_model"] = {
        **{k: [round(100.0 * float(r["metrics"][k]), 2) for r in runs] for k in metric_keys},
        "best_auc": [r["audit"].get(BEST_AUC) for r in runs],
    }
    if is_reference:  # the oracles against themselves: nothing to measure
        row.update(
            klom=None,
            challenge_score=None,
            epsilon_mean=None,
            ulira_accuracy=None,
            population_audit={k: row[k] / 100.0 for k in metric_keys} | {BEST_AUC: row["best_auc"]},
        )
        return row
    per_example = {split: klom(unlearned[split], oracle_margins[split]) for split in _SPLITS}
    epsilons = epsilon_scores(unlearned["forget"], oracle_margins["forget"])
    row["klom"] = {split: {k: round(v, 4) for k, v in summarise(per_example[split]).items()} for split in _SPLITS}
    row["challenge_score"] = round(float(challenge_score(epsilons, len(runs))), 4)
    row["epsilon_mean"] = round(float(epsilons.mean()), 4)
    row["ulira_accuracy"] = round(float(ulira(unlearned["forget"], oracle_margins["forget"])), 4)
    row["population_audit"] = {
        **{f"{k}": row[k] / 100.0 for k in metric_keys},
        **{KLOM_MEAN.format(split=split): row["klom"][split]["mean"] for split in _SPLITS},
        CHALLENGE_SCORE: row["challenge_score"],
        EPSILON_MEAN: row["epsilon_mean"],
        ULIRA_ACCURACY: row["ulira_accuracy"],
        BEST_AUC: row["best_auc"],
    }
    return row


def _population_summary(
    row: dict[str, Any], reference_row: dict[str, Any], floor: Optional[dict[str, Any]], counts: dict[str, int]
) -> list[dict[str, Any]]:
    """Each population number beside its Retrain value: the oracles' means for the metrics and the
    attack, the ideal for the per-example audits (KLoM 0, U-LiRA 0.5, score 1, epsilon 0), with
    the reseeded row's distance to them as the noise floor."""
    ideal = {
        **{KLOM_MEAN.format(split=split): 0.0 for split in _SPLITS},
        CHALLENGE_SCORE: 1.0,
        EPSILON_MEAN: 0.0,
        ULIRA_ACCURACY: 0.5,
    }
    reference = {**{k: v for k, v in reference_row["population_audit"].items() if k not in ideal}, **ideal}
    reseeded = None if floor is None else {k: v for k, v in floor["population_audit"].items() if v is not None}
    after = {k: v for k, v in row["population_audit"].items() if v is not None}
    spread = {}  # twice the standard error of the difference of two population means
    models = row["models"]
    for key in _METRIC_KEYS:
        spread[key] = 2.0 * ((row[f"{key}_std"] ** 2 + reference_row[f"{key}_std"] ** 2) / models) ** 0.5 / 100.0
    if row.get("best_auc_std") is not None and reference_row.get("best_auc_std") is not None:
        spread[BEST_AUC] = 2.0 * ((row["best_auc_std"] ** 2 + reference_row["best_auc_std"] ** 2) / models) ** 0.5
    return audit_summary(after, reference, reseeded, None, floors=spread)


def population_table(result: dict[str, Any]) -> str:
    """The population's markdown table: per row the means of UA, RA, TA, MIA-efficacy (%, with
    Avg. Gap to the oracles), the best threshold attack's AUC, KLoM on D_f / D_r / D_t (means),
    the challenge score, U-LiRA accuracy, and how many numbers are out of line."""
    header = [
        "Method",
        "UA",
        "RA",
        "TA",
        "MIA-Eff.",
        "Avg. Gap",
        "MIA AUC (best)",
        "KLoM D_f",
        "KLoM D_r",
        "KLoM D_t",
        "Score (NeurIPS'23)",
        "U-LiRA acc",
        "out of line",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in result["rows"]:
        flagged = sum(1 for e in row["audit_summary"] if e["verdict"].startswith("out of line"))
        cells = [row["name"]] + [f"{row[k]:.2f}" for k in GAP_METRICS] + [f"{row['avg_gap']:.2f}"]
        cells += [f"{row['best_auc']:.3f}" if row["best_auc"] is not None else "-"]
        if row["klom"] is None:  # the reference: the oracles themselves
            cells += ["-"] * 5 + ["(reference)"]
        else:
            cells += [f"{row['klom'][s]['mean']:.2f}" for s in _SPLITS]
            cells += [f"{row['challenge_score']:.3f}", f"{row['ulira_accuracy']:.3f}", f"{flagged}/{len(row['audit_summary'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    forget = result["forget"]
    caption = (
        f"N = {result['models']} originals, {result['models']} oracles (Retrain) and {result['models']} unlearned"
        f" models per row; forget {forget['count']} of {forget['count'] + forget['retain_count']} examples;"
        " means over the models (%); KLoM = mean over examples of KL(unlearned || oracle) margins (0 = like"
        " Retrain); score: higher = better; U-LiRA: 0.5 = forgotten."
    )
    return caption + "\n\n" + "\n".join(lines)
