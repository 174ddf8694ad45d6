"""``compare`` with per-row originals: dense and sparse rows in one table, each measured against its
own Retrain; the two papers' pipelines (omp, lottery); the topology gap with its noise floor on
digits; config errors. The presets themselves are parsed here and run by the README's commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_unlearn.benchmark import (
    DENSE,
    MethodSpec,
    PipelineSpec,
    check_methods,
    check_originals,
    effective_spec,
    format_table,
    parse_config,
    reference_rows,
    run_compare,
)
from lightning_unlearn.benchmark.config import OriginalSpec
from lightning_unlearn.metrics.functional import gap_closed, mask_iou, masks_of

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [
    ROOT / "lightning_unlearn/configs/digits/compare_sparse.yaml",
    ROOT / "lightning_unlearn/configs/digits/compare_unpruning.yaml",
    ROOT / "benchmarks/configs/sparse_cpu.yaml",
    ROOT / "benchmarks/configs/unpruning_cpu.yaml",
]


def omp_config() -> dict:
    """Dense and OMP rows on digits, 3 epochs of everything."""
    return {
        "seed": 0,
        "accelerator": "cpu",
        "data": {
            "class_path": "lightning_unlearn.data.DigitsDataModule",
            "init_args": {"forget": {"ratio": 0.1, "seed": 0}, "batch_size": 64},
        },
        "model": {"class_path": "lightning_unlearn.models.SmallCNN", "init_args": {"in_channels": 1, "num_classes": 10}},
        "original": {"max_epochs": 2, "lr": 0.05},
        "originals": {"omp80": {"pipeline": "omp", "amount": 0.8, "parameters": r"features\.\d+\.0\.weight", "rewind_epoch": 1}},
        "methods": {
            "retrain": {"method": "retrain", "max_epochs": 2, "init_args": {"lr": 0.05}},
            "finetune": {"method": "finetune", "max_epochs": 1, "init_args": {"lr": 0.01}},
            "retrain_omp80": {"method": "retrain", "original": "omp80", "max_epochs": 2, "init_args": {"lr": 0.05}},
            "finetune_omp80": {"method": "finetune", "original": "omp80", "max_epochs": 1, "init_args": {"lr": 0.05}},
        },
    }


def lottery_config() -> dict:
    """The un-pruning protocol on digits, small: LeNet-300-100 (64 -> 32 -> 16 -> 10), 2 rounds."""
    return {
        "seed": 0,
        "accelerator": "cpu",
        "data": {
            "class_path": "lightning_unlearn.data.DigitsDataModule",
            "init_args": {"forget": {"classes": [3]}, "batch_size": 64},
        },
        "model": {
            "class_path": "lightning_unlearn.models.LeNet300100",
            "init_args": {"in_features": 64, "num_classes": 10, "hidden": [32, 16]},
        },
        "original": {"max_epochs": 2},
        "originals": {
            "lt": {
                "pipeline": "lottery",
                "amount": 0.75,
                "rounds": 2,
                "max_epochs": 9,
                "lr": 0.05,
                "lr_scheduler": None,
                "init_seed": 7,
            }
        },
        "methods": {
            "retrain": {"method": "retrain", "original": "lt", "max_epochs": 9},
            "retrain_order": {"method": "retrain", "original": "lt", "max_epochs": 9, "reference": "retrain", "shuffle_seed": 5},
            "finetune": {"method": "finetune", "original": "lt", "max_epochs": 1, "init_args": {"lr": 0.01}},
            "finetune_replay": {
                "method": "finetune",
                "original": "lt",
                "max_epochs": 1,
                "init_args": {"lr": 0.01},
                "callbacks": [
                    {"callback": "unpruning", "init_args": {"score": "replay", "replay_rounds": 2, "replay_epochs": 3.0}}
                ],
            },
        },
    }


def row(result: dict, name: str) -> dict:
    return next(r for r in result["rows"] if r["name"] == name)


# ---------------------------------------------------------------------------------- planning, without training
def test_reference_rows_and_effective_specs() -> None:
    specs = check_methods(lottery_config()["methods"])
    assert reference_rows(specs) == {
        "retrain": None,
        "retrain_order": "retrain",
        "finetune": "retrain",
        "finetune_replay": "retrain",
    }
    pipelines = check_originals(lottery_config()["originals"], specs)
    lt = pipelines["lt"]
    assert (lt.scope, lt.structured) == ("layer", False)
    retrain = effective_spec(specs["retrain"], lt, 0, OriginalSpec())
    pruning = retrain.callbacks[0]
    assert pruning["callback"] == "magnitude_pruning" and pruning["init_args"]["schedule"] == "lottery"
    assert pruning["init_args"]["rewind"] == "start" and retrain.init_args["init_seed"] == 7  # the same initialisation
    assert retrain.init_args["lr_scheduler"] is None and retrain.max_epochs == 9
    replay = effective_spec(specs["finetune_replay"], lt, 0, OriginalSpec())
    assert [c["callback"] for c in replay.callbacks] == ["keep_topology", "unpruning"]
    assert replay.callbacks[1]["init_args"]["init_seed"] == 7
    omp = PipelineSpec("omp", 0.9)
    assert effective_spec(MethodSpec("retrain", 2), omp, 0, OriginalSpec()).init_args == {"mask": "model"}
    assert effective_spec(MethodSpec("finetune", 2), None, 0, OriginalSpec()) == MethodSpec("finetune", 2)


@pytest.mark.parametrize(
    "originals, methods, match",
    [
        ({}, {"retrain": {"method": "retrain"}, "ft": {"method": "finetune", "original": "nope"}}, "no original 'nope'"),
        (
            {"s": {"pipeline": "omp"}},
            {"retrain": {"method": "retrain"}, "ft": {"method": "finetune", "original": "s"}},
            "none retrains it",
        ),
        ({"s": {"pipeline": "snip"}}, {"retrain": {"method": "retrain"}}, "pipeline` must be one of"),
        ({"s": {"pipeline": "omp", "rounds": 3}}, {"retrain": {"method": "retrain"}}, "applies to pipeline 'lottery'"),
        ({"s": {"pipeline": "lottery", "rounds": 3, "max_epochs": 3}}, {"retrain": {"method": "retrain"}}, "rounds \\+ 1"),
        ({}, {"retrain": {"method": "retrain"}, "ft": {"method": "finetune", "reference": "ft"}}, "must be a Retrain row"),
        ({"dense": {"pipeline": "omp"}}, {"retrain": {"method": "retrain"}}, "give this one another name"),
    ],
)
def test_bad_originals_are_refused_before_training(originals, methods, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_originals(originals, check_methods(methods))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_parse_and_check(path: Path) -> None:
    cfg = parse_config(path, instantiate=False)
    specs = check_methods(cfg.methods)
    pipelines = check_originals(cfg.originals, specs)
    assert pipelines and all(spec.original in (DENSE, *pipelines) for spec in specs.values())


# ---------------------------------------------------------------------------------- running
@pytest.fixture(scope="module")
def omp_run():
    """One compare run of :func:`omp_config`, with the networks every row started from and ended with."""
    from lightning_unlearn.benchmark import compare, runner

    seen = {}

    def recording(spec, original, datamodule, seed, **kwargs):
        run = runner.run_row(spec, original, datamodule, seed, **kwargs)
        seen[(spec.method, spec.original)] = (original, run.model)
        return run

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare, "run_row", recording)
        result = run_compare(omp_config())
    return result, seen


def test_dense_and_sparse_rows_in_one_table_each_against_its_own_retrain(omp_run) -> None:
    result, _ = omp_run
    rows = {r["name"]: r for r in result["rows"]}
    assert {n: (r["original"], r["reference"]) for n, r in rows.items()} == {
        "retrain": (DENSE, "retrain"),
        "finetune": (DENSE, "retrain"),
        "retrain_omp80": ("omp80", "retrain_omp80"),
        "finetune_omp80": ("omp80", "retrain_omp80"),
    }
    for name, ref in (("finetune", "retrain"), ("finetune_omp80", "retrain_omp80")):
        for key, gap in rows[name]["gap"].items():  # the gaps are to the row's own reference
            assert gap == pytest.approx(abs(rows[name][key] - rows[ref][key]), abs=0.011)
    assert rows["retrain_omp80"]["avg_gap"] == 0.0 and "omp80" in result["originals"]
    table = format_table(result)
    assert "| omp80 original (before) |" in table and "| Reference |" in table
    assert result["topology"] == {}  # omp: the Retrain keeps the original's mask, the topology is fixed by construction


def test_omp_pipeline_sparse_rows_keep_the_mask_and_the_retrain_uses_it(omp_run) -> None:
    _, seen = omp_run
    sparse_original, retrained = seen[("retrain", "omp80")]
    _, finetuned = seen[("finetune", "omp80")]
    dense_original, _ = seen[("finetune", DENSE)]
    conv = {n: m for n, m in masks_of(sparse_original).items() if n.startswith("features")}
    assert 0.19 < sum(int(m.sum()) for m in conv.values()) / sum(m.numel() for m in conv.values()) < 0.21  # 80 % pruned
    assert all(bool(m.all()) for n, m in masks_of(sparse_original).items() if n not in conv)  # conv weights only
    assert float(mask_iou(masks_of(retrained), conv)) == 1.0  # the sparse Retrain trains under the same mask
    assert float(mask_iou(masks_of(finetuned), conv)) == 1.0  # the method unlearns under it (KeepTopology)
    assert not torch.equal(retrained.features[0][0].weight, sparse_original.features[0][0].weight)  # from fresh weights
    assert all(bool(m.all()) for m in masks_of(dense_original).values())  # the dense rows' original stays dense


@pytest.fixture(scope="module")
def lottery_run():
    return run_compare(lottery_config())


def test_lottery_protocol_topology_gap_and_noise_floor_on_digits(lottery_run) -> None:
    result = lottery_run
    topology = result["topology"]
    assert set(topology) == {"retrain_order", "finetune", "finetune_replay"}
    for name in ("finetune", "finetune_replay"):
        t = topology[name]
        assert t["density"] == pytest.approx(0.25, abs=0.01)
        assert t["gap_closed"] == pytest.approx(gap_closed(t["before"], t["after"], t["floor"]))
    # without un-pruning the topology stays the original's: nothing is closed
    assert topology["finetune"]["after"] == pytest.approx(topology["finetune"]["before"])
    assert topology["finetune"]["gap_closed"] == pytest.approx(0.0)
    # the deleted class left a gap beyond the noise floor, and the replay (the pipeline's own budget) closes most of it
    t = topology["finetune_replay"]
    assert t["floor"] > t["before"] + 0.02
    assert t["gap_closed"] > 0.5 and t["topology_time_s"] > 0
    assert "| finetune_replay | lt |" in format_table(result)


# ---------------------------------------------------------------------------------- benchmarks/sparse.py
def test_sparse_benchmark_configs_and_tables(omp_run, lottery_run, tmp_path) -> None:
    """benchmarks/sparse.py without its long runs: the per-seed configs it builds, and its tables and
    plot from the compare results above (the runs themselves are run_compare, tested above)."""
    pytest.importorskip("matplotlib")
    from benchmarks import sparse

    base = omp_config()
    cfg = sparse.sparsity_config(base, 3, [0.5, 0.8])
    assert cfg["seed"] == 3 and cfg["data"]["init_args"]["forget"] == {"ratio": 0.1, "seed": 3}
    assert set(cfg["originals"]) == {"omp50", "omp80"} and cfg["originals"]["omp50"]["amount"] == 0.5
    assert cfg["methods"]["finetune_omp50"]["original"] == "omp50" and "retrain_omp80" in cfg["methods"]
    payload = {"densities": [0.8], "runs": [{"seed": 0, "result": omp_run[0]}]}
    assert "| finetune | 6.83 / 5.97 |" in sparse.paper_vs_ours(payload, ["retrain", "finetune"])
    assert "| finetune Avg. Gap |" in sparse.sweep_table(payload, ["retrain", "finetune"])
    sparse.sweep_plot(payload, ["retrain", "finetune"], str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").stat().st_size > 1000

    cfg = sparse.unpruning_config(lottery_config(), "random10", "structured", 4)
    assert cfg["data"]["init_args"]["forget"] == {"ratio": 0.1, "seed": 4} and cfg["originals"]["lt"]["init_seed"] == 4
    assert cfg["originals"]["lt"]["structured"] is True and cfg["methods"]["retrain_order"]["shuffle_seed"] == 1004
    payload = {"runs": [{"scenario": "classwise", "structure": "unstructured", "seed": 0, "result": lottery_run}]}
    topology, metrics, summary = sparse.unpruning_tables(payload)
    assert "| classwise | unstructured | 0 | finetune_replay |" in topology
    assert summary["classwise/unstructured/finetune"]["gap_closed"] == [pytest.approx(0.0)]
    assert "| classwise | unstructured | retrain |" in metrics
    assert "1 of 1" in sparse.unpruning_summary_table(summary)
