"""Tiny smoke runs of every benchmark script on digits, so they cannot rot (no timing assertions)."""

import json
from pathlib import Path

import pytest

from benchmarks import evaluation_speed, mia_speed, overhead, quality, reliability, scaling
from benchmarks.common import emit


def test_mia_speed_smoke():
    result, table = mia_speed.run([300], "cpu")
    row = result["rows"][0]
    assert row["identical"] >= 0.99 and abs(row["efficacy_native"] - row["efficacy_sklearn"]) <= 0.01
    assert "speed-up" in table


def test_overhead_smoke():
    result, table = overhead.run(train_size=0, repeats=1, steps=6, data="digits")
    assert result["loop"]["lightning_s"] > 0 and result["loop"]["hand_s"] > 0
    names = {row["callback"] for row in result["callbacks"]}
    assert {"SaliencyMask", "SparsityRegularization", "MagnitudePruning", "DynamicMask"} <= names
    assert "hand-written loop" in table
    assert result["implicit_fast"]["with_ms"] > 0 and result["implicit_fast"]["base_ms"] > 0
    assert "ImplicitGradientSurgery(eu_fast) step vs NegGrad+ step" in table


def test_reliability_smoke(tmp_path):
    config = {
        "seed": 0,
        "accelerator": "cpu",
        "data": {
            "class_path": "lightning_unlearn.data.DigitsDataModule",
            "init_args": {"forget": {"ratio": 0.1, "seed": 0}, "batch_size": 128, "eval_batch_size": 1024},
        },
        "model": {
            "class_path": "lightning_unlearn.models.SmallCNN",
            "init_args": {"in_channels": 1, "num_classes": 10, "width": 4},
        },
        "original": {"max_epochs": 1, "lr": 0.1},
        "methods": {
            "retrain": {"method": "retrain", "max_epochs": 1, "init_args": {"lr": 0.1}},
            "retrain_reseeded": {"method": "retrain", "max_epochs": 1, "init_args": {"lr": 0.1}},
            "gradient_ascent": {"method": "gradient_ascent", "max_epochs": 1, "init_args": {"lr": 0.01}},
        },
    }
    result, table = reliability.run(config, [0.1, 0.11], [0], 3, None, str(tmp_path / "cache"))
    assert [(s["ratio"], s["draw"]) for s in result["sets"]] == [(0.1, 0), (0.11, 0)]
    assert result["sets"][0]["forget_count"] < result["sets"][1]["forget_count"]
    cell = result["summary"]["gradient_ascent"]["ulira"]
    assert cell["min"] <= cell["mean"] <= cell["max"] and 0.5 <= cell["agreement"] <= 1.0
    assert set(result["summary"]) == {"retrain_reseeded", "gradient_ascent"}
    assert "| gradient_ascent | U-LiRA accuracy |" in table
    pytest.importorskip("matplotlib")
    reliability.plot(result, str(tmp_path / "reliability.png"))
    assert (tmp_path / "reliability.png").stat().st_size > 0


def test_evaluation_speed_smoke():
    result, table = evaluation_speed.run(train_size=0, test_size=0, repeats=1, data="digits")
    assert result["evaluation_s"] > 0 and result["epoch_s"] > 0 and result["ratio"] > 0 and result["audited_s"] > 0
    assert result["train_size"] > 0 and result["test_size"] > 0
    assert "UnlearningEvaluation pass" in table and "training epoch" in table


def test_scaling_smoke(tmp_path):
    pytest.importorskip("matplotlib")
    result, _table = scaling.run([0.1, 0.3], ["small_cnn"], 0, "digits")
    assert len(result["rows"]) == 2 * len(scaling.METHODS)
    scaling.plot(result, str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_quality_smoke(tmp_path):
    import yaml

    config = yaml.safe_load(open("lightning_unlearn/configs/quickstart.yaml"))
    config["original"]["max_epochs"] = 2
    config["methods"] = {"retrain": {"method": "retrain", "max_epochs": 1}, "ga": {"method": "gradient_ascent", "max_epochs": 1}}
    result, table = quality.run(config, ["classwise"], [0, 1])
    assert set(result["summary"]["classwise"]) == {"retrain", "ga"}
    assert result["summary"]["classwise"]["retrain"]["avg_gap"]["mean"] == 0
    assert result["summary"]["classwise"]["retrain"]["time_vs_retrain"]["mean"] == 100
    assert "RTE (% of Retrain)" in table and "MIA AUC (best)" in table
    assert 0.0 <= result["summary"]["classwise"]["ga"]["mia_auc"]["mean"] <= 1.0  # the audit column, every row
    emit("quality", result, table, str(tmp_path / "q.json"))
    assert json.loads((tmp_path / "q.json").read_text())["benchmark"] == "quality"


def test_tune_smoke_chooses_on_the_validation_request(tmp_path, monkeypatch):
    import yaml

    from benchmarks import tune

    monkeypatch.setitem(tune.EXTRA_GRIDS, "ssd", {"alpha": (1.0, 1000.0)})  # 1000 selects nothing: rejected

    config = yaml.safe_load(open("lightning_unlearn/configs/quickstart.yaml"))
    config["original"]["max_epochs"] = 2
    config["methods"] = {
        "retrain": {"method": "retrain", "max_epochs": 1},
        "ga": {"method": "gradient_ascent", "max_epochs": 2, "init_args": {"lr": 0.01}},
        "salun": {"method": "random_label", "max_epochs": 1, "callbacks": [{"callback": "saliency_mask"}]},
        "ssd": {"method": "ssd", "max_epochs": 1},
    }
    result, table = tune.tune(config, "classwise")
    assert result["validation"] == {"classes": [tune.VALIDATION_CLASS]} and tune.VALIDATION_CLASS != 0
    ga = [t for t in result["trials"] if t["row"] == "ga"]
    assert len(ga) == len(tune.LR_FACTORS) * 2  # lr grid x epochs 1..2, read from one fit per lr
    assert {t["init_args"]["lr"] for t in ga} == {0.00333, 0.01, 0.03}
    best = min(ga, key=lambda t: t["avg_gap"])
    assert result["chosen"]["ga"]["init_args"]["lr"] == best["init_args"]["lr"]
    assert result["chosen"]["ga"]["max_epochs"] == best["max_epochs"]
    thresholds = {t["callbacks"][0]["init_args"]["threshold"] for t in result["trials"] if t["row"] == "salun"}
    assert thresholds == set(tune.EXTRA_GRIDS["saliency_mask"]["threshold"])
    assert "retrain" not in result["chosen"] and "| ga |" in table
    assert [r["init_args"]["alpha"] for r in result["rejected"]] == [1000.0] and "alpha" in result["rejected"][0]["error"]
    assert result["chosen"]["ssd"]["init_args"]["alpha"] == 1.0
    tune.write_rows(result, str(tmp_path), "configs/quickstart.yaml")
    # re-tuning one row (--rows) keeps the other rows of the file
    tune.write_rows({**result, "chosen": {"ga": {**result["chosen"]["ga"], "max_epochs": 1}}}, str(tmp_path), "x")
    written = yaml.safe_load((tmp_path / "classwise.yaml").read_text())["methods"]
    assert set(written) == {"ga", "salun", "ssd"} and written["ga"]["max_epochs"] == 1
    tune.write_rows(result, str(tmp_path), "configs/quickstart.yaml")
    merged = quality.scenario_config(config, "classwise", 0, tuned=str(tmp_path))
    assert merged["methods"]["ga"] == result["chosen"]["ga"] and merged["methods"]["retrain"] == config["methods"]["retrain"]
    assert merged["data"]["init_args"]["forget"] == {"classes": [0]}  # reported on class 0, tuned on another
    # an epoch count read from the longer fit equals a fit of exactly that length
    from lightning_unlearn.benchmark import MethodSpec, load_config, percent, run_row, train_original
    from lightning_unlearn.metrics.evaluation import evaluate
    from lightning_unlearn.metrics.keys import GAP_METRICS

    cfg, _specs, original_spec = load_config(
        quality.scenario_config(config, "classwise", tune.VALIDATION_SEED, validation_class=tune.VALIDATION_CLASS)
    )
    original, _ = train_original(cfg.model, cfg.data, original_spec, tune.VALIDATION_SEED, accelerator="cpu")
    run = run_row(
        MethodSpec("gradient_ascent", 1, {"lr": 0.01}),
        original,
        cfg.data,
        tune.VALIDATION_SEED,
        evaluation=False,
        accelerator="cpu",
    )
    alone = percent(evaluate(run.model, cfg.data), GAP_METRICS)
    read = next(t for t in ga if t["init_args"]["lr"] == 0.01 and t["max_epochs"] == 1)
    assert alone == {key: read[key] for key in alone}


@pytest.mark.parametrize("path", sorted(Path("benchmarks/configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_benchmark_configs_and_their_tuned_rows_are_valid(path):
    """Every benchmark config parses and its rows check; so do the rows tune.py wrote for it."""
    import yaml

    from lightning_unlearn.benchmark import check_methods, parse_config

    config = yaml.safe_load(path.read_text())
    check_methods(parse_config(config, instantiate=False).methods)
    tuned = Path("benchmarks/configs") / path.stem.replace("fmnist_", "tuned_")
    for scenario in quality.SCENARIOS:
        if (tuned / f"{scenario}.yaml").is_file():
            merged = quality.scenario_config(config, scenario, 0, tuned=str(tuned))
            check_methods(parse_config(merged, instantiate=False).methods)


def test_select_rows_keeps_the_retrain_reference_and_names_unknown_rows():
    config = {
        "methods": {
            "retrain": {"method": "retrain"},
            "floor": {"method": "retrain"},
            "ft": {"method": "finetune"},
            "ga": {"method": "gradient_ascent"},
        }
    }
    assert list(quality.select_rows(config, ["ga"])["methods"]) == ["retrain", "ga"]
    assert list(quality.select_rows(config, ["ga", "floor"])["methods"]) == ["retrain", "floor", "ga"]
    assert quality.select_rows(config, None) == config
    with pytest.raises(ValueError, match=r"--rows: no row\(s\) \['nope'\]"):
        quality.select_rows(config, ["nope"])


def test_oracle_free_gap_looks_the_choice_up_among_the_retrain_tuned_trials():
    from benchmarks import oracle_free_gap

    def trial(row, lr, epochs, gap, callbacks=()):
        return {"row": row, "init_args": {"lr": lr}, "callbacks": list(callbacks), "epochs": epochs, "avg_gap": gap}

    old = {"trials": [trial("ft", 0.01, 1, 2.0), trial("ft", 0.03, 2, 1.0), trial("rl", 0.01, 2, 9.0)]}
    new = {"trials": [trial("rl", 0.01, 2, 3.5), trial("rl", 0.0025, 2, 1.5)]}  # re-tuned row: replaces the old trials
    chosen = {
        "ft": {"method": "finetune", "max_epochs": 1, "init_args": {"lr": 0.01}},
        "rl": {"method": "random_label", "max_epochs": 2, "init_args": {"lr": 0.01}},
        "ga": {"method": "gradient_ascent", "max_epochs": 1, "init_args": {"lr": 0.5}},
    }
    result, table = oracle_free_gap.compare({"scenario": "random10", "chosen": chosen}, [old, new])
    assert result["rows"]["ft"]["difference"] == pytest.approx(1.0)
    assert result["rows"]["rl"]["difference"] == pytest.approx(2.0) and result["rows"]["rl"]["retrain_tuned_avg_gap"] == 1.5
    assert "ga" not in result["rows"]  # no Retrain-tuned trials to compare with
    chosen["ft"]["max_epochs"] = 3
    assert oracle_free_gap.compare({"chosen": chosen}, [old])[0]["rows"]["ft"]["difference"] is None
    assert "| ft | lr=0.01, 1 ep | 2.00 | lr=0.03, 2 ep | 1.00 | +1.00 |" in table


def test_population_rows_keep_the_retrain_reference_and_the_reseeded_floor():
    import yaml

    from benchmarks.population import population_config

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
    config = yaml.safe_load((root / "fmnist_cpu.yaml").read_text())
    cfg = population_config(
        config, str(root / "tuned_cpu"), train_size=4000, test_size=1000, epochs=5, rows=["finetune", "gradient_ascent"]
    )
    assert list(cfg["methods"]) == ["retrain", "retrain_reseeded", "finetune", "gradient_ascent"]
    assert cfg["data"]["init_args"]["train_size"] == 4000 and cfg["original"]["max_epochs"] == 5
