"""Tiny smoke runs of every benchmark script on digits, so they cannot rot (no timing assertions)."""

import json

import pytest

from benchmarks import mia_speed, overhead, quality, scaling
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


def test_scaling_smoke(tmp_path):
    pytest.importorskip("matplotlib")
    result, table = scaling.run([0.1, 0.3], ["small_cnn"], 0, "digits")
    assert len(result["rows"]) == 2 * len(scaling.METHODS)
    scaling.plot(result, str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_quality_smoke(tmp_path):
    import yaml

    config = yaml.safe_load(open("configs/quickstart.yaml"))
    config["original"]["max_epochs"] = 2
    config["methods"] = {"retrain": {"method": "retrain", "max_epochs": 1},
                         "ga": {"method": "gradient_ascent", "max_epochs": 1}}
    result, table = quality.run(config, ["classwise"], [0, 1])
    assert set(result["summary"]["classwise"]) == {"retrain", "ga"}
    assert result["summary"]["classwise"]["retrain"]["avg_gap"]["mean"] == 0
    emit("quality", result, table, str(tmp_path / "q.json"))
    assert json.loads((tmp_path / "q.json").read_text())["benchmark"] == "quality"
