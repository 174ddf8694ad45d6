"""The population runner: N = 8 originals, oracles and unlearned models on digits (a tiny
network, two epochs: cheap), cached within the session; a second row costs only its unlearning."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_unlearn.benchmark import population as population_module
from lightning_unlearn.benchmark.population import population_table, run_population
from lightning_unlearn.metrics.functional import klom, ulira

CONFIG = {
    "seed": 0,
    "accelerator": "cpu",
    "data": {
        "class_path": "lightning_unlearn.data.DigitsDataModule",
        "init_args": {"forget": {"ratio": 0.1, "seed": 0}, "batch_size": 128, "eval_batch_size": 1024},
    },
    "model": {"class_path": "lightning_unlearn.models.SmallCNN", "init_args": {"in_channels": 1, "num_classes": 10, "width": 4}},
    "original": {"max_epochs": 2, "lr": 0.1},
    "methods": {
        "retrain": {"method": "retrain", "max_epochs": 2, "init_args": {"lr": 0.1}},
        "finetune": {"method": "finetune", "max_epochs": 1, "init_args": {"lr": 0.05}},
        "gradient_ascent": {"method": "gradient_ascent", "max_epochs": 1, "init_args": {"lr": 0.01}},
        "oracle_matching": {"method": "oracle_matching", "max_epochs": 2, "init_args": {"oracle": "reference", "lr": 0.01}},
    },
}


@pytest.fixture(scope="session")
def population(tmp_path_factory):
    cache = tmp_path_factory.mktemp("population")
    return cache, run_population(CONFIG, models=8, rows=["finetune"], cache_dir=cache)


def test_eight_models_per_population_and_the_per_example_audits(population):
    _cache, result = population
    assert result["models"] == 8 and result["seeds"] == list(range(8))
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["retrain", "finetune"]
    assert rows["retrain"]["klom"] is None and rows["retrain"]["audit_summary"] == []
    finetune = rows["finetune"]
    for split in ("forget", "retain", "test"):
        assert math.isfinite(finetune["klom"][split]["mean"]) and finetune["klom"][split]["mean"] > 0
    assert 0.0 <= finetune["challenge_score"] <= 1.0 and 0.0 <= finetune["ulira_accuracy"] <= 1.0
    assert 0.0 <= finetune["best_auc"] <= 1.0 and finetune["avg_gap"] >= 0
    assert finetune["audit_summary"] and all(e["verdict"] for e in finetune["audit_summary"])
    table = population_table(result)
    assert "| finetune |" in table and "KLoM D_f" in table and "U-LiRA acc" in table


def test_margins_are_saved_once_and_the_audits_recomputed_from_them(population):
    cache, result = population
    rows_dir = next(p for p in cache.iterdir() if not p.name.startswith("originals-"))
    oracle_files = sorted((rows_dir / "rows").glob("retrain-*/*.pt"))
    finetune_files = sorted((rows_dir / "rows").glob("finetune-*/*.pt"))
    assert len(oracle_files) == 8 and len(finetune_files) == 8
    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    oracle = torch.stack([load(p)["margins"]["forget"] for p in oracle_files]).double()
    unlearned = torch.stack([load(p)["margins"]["forget"] for p in finetune_files]).double()
    row = next(r for r in result["rows"] if r["name"] == "finetune")
    assert row["klom"]["forget"]["mean"] == pytest.approx(float(klom(unlearned, oracle).mean()), abs=1e-4)
    assert row["ulira_accuracy"] == pytest.approx(float(ulira(unlearned, oracle)), abs=1e-4)


def test_a_second_method_costs_only_its_own_unlearning(population, monkeypatch):
    cache, first = population
    calls = []
    real_run_row = population_module.run_row
    monkeypatch.setattr(population_module, "train_original", lambda *a, **k: pytest.fail("an original was retrained"))
    monkeypatch.setattr(
        population_module, "run_row", lambda spec, *a, **k: calls.append(spec.method) or real_run_row(spec, *a, **k)
    )
    again = run_population(CONFIG, models=8, rows=["finetune", "gradient_ascent"], cache_dir=cache)
    assert calls == ["gradient_ascent"] * 8  # Retrain and FineTune came from the cache
    assert again["rows"][1] == first["rows"][1]  # the cached row is read back exactly


def test_oracle_matching_against_each_seeds_oracle_drives_klom_toward_the_floor(population):
    """Each OracleMatching model matches its own seed's Retrain (the runner binds oracle='reference'):
    its KLoM on D_f falls below FineTune's, towards the KLoM of Retrain with itself."""
    cache, _ = population
    result = run_population(CONFIG, models=8, rows=["finetune", "oracle_matching"], cache_dir=cache)
    rows = {row["name"]: row for row in result["rows"]}
    matched, finetune = rows["oracle_matching"]["klom"]["forget"]["mean"], rows["finetune"]["klom"]["forget"]["mean"]
    assert matched < 0.9 * finetune, (matched, finetune)
    assert rows["oracle_matching"]["ulira_accuracy"] < rows["finetune"]["ulira_accuracy"]
