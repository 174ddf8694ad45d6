"""Sequential requests end to end: the chain runner, relapse, Retrain cache, chained reports, KeepForgotten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightning_unlearn.benchmark.sequential import format_sequential_tables, run_sequential
from lightning_unlearn.report import read_report, report_sha256, verify_report_chain

ROOT = Path(__file__).resolve().parents[1]


def small_chain(**overrides) -> dict:
    """configs/sequential_digits.yaml cut down: two class requests, a short original and Retrain."""
    config = yaml.safe_load((ROOT / "lightning_unlearn" / "configs" / "sequential_digits.yaml").read_text())
    config["requests"] = [{"classes": [3]}, {"classes": [5]}]
    config["original"]["max_epochs"] = 15
    methods = config["methods"]
    methods["retrain"]["max_epochs"] = 4
    config["methods"] = {
        "retrain": methods["retrain"],
        "gradient_ascent": methods["gradient_ascent"],
        "gradient_ascent_keep": methods["gradient_ascent_keep"],
    }
    config["methods"]["gradient_ascent_keep"]["callbacks"][0]["init_args"]["weight"] = 5.0
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    config = small_chain(output_dir=str(out / "reports"), cache_dir=str(out / "cache"))
    return run_sequential(config), out, config


def test_chain_reports_metrics_relapse_and_verifiable_reports(chain):
    result, out, _ = chain
    assert [s["forget"]["spec"]["classes"] for s in result["steps"]] == [[3], [5]]
    assert result["steps"][1]["chain"]["deleted_count"] == sum(s["forget"]["count"] for s in result["steps"])
    for name, rows in result["rows"].items():
        assert [r["step"] for r in rows] == [0, 1] and rows[0]["relapse"] == [] and rows[0]["relapse_mean"] is None
        relapse = rows[1]["relapse"][0]
        assert relapse["request"] == 0 and 0 <= relapse["forget_acc"] <= 100
        reports = [read_report(out / "reports" / name / f"step_{k}.json") for k in range(2)]
        assert verify_report_chain(reports) == [r["report_sha256"] for r in rows]
        assert reports[1]["chain"]["previous_sha256"] == report_sha256(reports[0])
        assert reports[1]["metrics"]["relapse"][0]["request"] == 0
    assert all(r["avg_gap"] == 0 for r in result["rows"]["retrain"])
    table = format_sequential_tables(result)
    assert "after step 1" in table and "gradient_ascent_keep" in table


def test_a_changed_report_breaks_the_chain(chain):
    _, out, _ = chain
    reports = [json.loads((out / "reports" / "gradient_ascent" / f"step_{k}.json").read_text()) for k in range(2)]
    reports[0]["metrics"]["after"]["forget_acc"] = 0.5
    with pytest.raises(ValueError, match=r"report 1 .*altered or reordered"):
        verify_report_chain(reports)
    with pytest.raises(ValueError, match="no `chain` block"):
        verify_report_chain([{"method": "x"}])


def test_keep_forgotten_reduces_relapse(chain):
    """Unlearning class 5 with gradient ascent brings class 3 back (digits 3 and 5 look alike);
    distillation toward the previous step's outputs on class 3 keeps it forgotten."""
    result, _, _ = chain
    plain = result["rows"]["gradient_ascent"][1]["relapse"][0]
    kept = result["rows"]["gradient_ascent_keep"][1]["relapse"][0]
    assert plain["delta_forget_acc"] > 20, plain  # relapse without the callback
    assert kept["delta_forget_acc"] < plain["delta_forget_acc"] - 20, (plain, kept)
    assert kept["delta_mia"] > plain["delta_mia"]


def test_retrain_is_cached_per_step(chain):
    """Retrain of each step is on disk, keyed by the chain up to the step; a new run loads it."""
    import torch

    from lightning_unlearn.benchmark.sequential import _parse, _RetrainCache
    from lightning_unlearn.models import SmallCNN

    _, out, config = chain
    cached = sorted((out / "cache").glob("retrain_*.pt"))
    assert len(cached) == 2
    _, cfg = _parse(config)
    cache = _RetrainCache(config["cache_dir"], cfg, "retrain")
    assert cache.key(0) != cache.key(1)

    def must_not_train():
        raise AssertionError("the cached Retrain was trained again")

    state = torch.load(out / "cache" / f"retrain_{cache.key(1)}.pt", weights_only=True)
    model = cache.get(1, must_not_train, SmallCNN(in_channels=1, num_classes=10))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items()) and cache.runtime[1] > 0


def test_sequential_command_line(tmp_path, capsys):
    from lightning_unlearn.cli import main

    config = small_chain()
    config["original"]["max_epochs"] = 1
    config["methods"] = {"retrain": {"method": "retrain", "max_epochs": 1}}
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["sequential", "--config", str(path), "--output", str(tmp_path / "out.json")])
    assert "after step 1" in capsys.readouterr().out
    assert json.loads((tmp_path / "out.json").read_text())["requests"] == [
        {"indices": None, "classes": [3], "ratio": None, "seed": 0},
        {"indices": None, "classes": [5], "ratio": None, "seed": 0},
    ]


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "lightning_unlearn" / "configs" / "sequential_digits.yaml",
        *sorted((ROOT / "benchmarks" / "configs" / "sequential").glob("*.yaml")),
    ],
    ids=lambda p: p.stem,
)
def test_sequential_configs_parse(path):
    from lightning_unlearn.benchmark import check_methods
    from lightning_unlearn.benchmark.sequential import _parse
    from lightning_unlearn.data.requests import as_requests

    _, cfg = _parse(path)
    assert "retrain" in check_methods(cfg.methods) and len(as_requests(cfg.requests)) >= 2
