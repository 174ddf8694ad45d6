"""``lightning-unlearn compare``: the end-to-end story, its JSON and table, and config errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lightning_unlearn.benchmark import build_parser, check_methods, format_table, parse_config, run_compare

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "lightning_unlearn" / "configs" / "quickstart.yaml"
COMPARE_CONFIGS = [QUICKSTART, ROOT / "lightning_unlearn" / "configs" / "digits" / "compare_classwise.yaml"]
METHODS = ["retrain", "finetune", "gradient_ascent", "neggrad_plus", "random_label"]


def small_config(**methods: dict) -> dict:
    """A quickstart-like config as a mapping, 2 epochs of the original."""
    config = yaml.safe_load(QUICKSTART.read_text())
    config["original"]["max_epochs"] = 2
    config["methods"] = methods or {"retrain": {"method": "retrain", "max_epochs": 1}}
    return config


@pytest.mark.parametrize("path", COMPARE_CONFIGS, ids=lambda p: p.stem)
def test_compare_configs_parse(path: Path) -> None:
    cfg = parse_config(path, instantiate=False)
    specs = check_methods(cfg.methods)
    assert list(specs)[: len(METHODS)] == METHODS
    # omegaconf interpolation: Retrain uses the original's recipe
    assert specs["retrain"].max_epochs == cfg.original.max_epochs
    assert specs["retrain"].init_args["lr"] == cfg.original.lr


def test_classwise_compare_covers_every_registered_method_and_callback() -> None:
    from lightning_unlearn import registry

    specs = check_methods(
        parse_config(ROOT / "lightning_unlearn/configs/digits/compare_classwise.yaml", instantiate=False).methods
    )
    used_methods = {spec.method for spec in specs.values()}
    used_callbacks = {c["callback"] for spec in specs.values() for c in spec.callbacks}
    assert {e.name for e in registry.entries("method")} <= used_methods
    # keep_topology: compare puts it on every row of a sparse original (configs/digits/compare_sparse.yaml)
    assert {e.name for e in registry.entries("callback")} - {"evaluation", "keep_topology"} <= used_callbacks


def test_command_line_override_reaches_interpolated_rows() -> None:
    """``--original.max_epochs=5`` reaches Retrain through ``${original.max_epochs}`` (interpolation
    is resolved after the overrides). The quickstart itself runs once, in tests/test_golden.py."""
    cfg = build_parser(exit_on_error=False).parse_args(["--config", str(QUICKSTART), "--original.max_epochs=5"])
    specs = check_methods(cfg.methods)
    assert cfg.original.max_epochs == 5 == specs["retrain"].max_epochs


def test_unknown_method_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The command's error path, in process (the console script itself runs in tests/test_golden.py)."""
    from lightning_unlearn.cli import main

    config = small_config(retrain={"method": "retrain", "max_epochs": 1}, mine={"method": "no_such_method"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--config", str(path)])
    assert exc.value.code not in (0, None)
    stderr = capsys.readouterr().err
    assert "methods.mine.method: unknown method 'no_such_method'" in stderr
    assert "random_label" in stderr  # lists the registered names


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ({"ft": {"method": "finetune", "max_epochs": 1}}, "no Retrain row"),
        ({"retrain": {"method": "retrain", "max_epochs": 0}}, "`methods.retrain.max_epochs` must be an integer >= 1, got 0"),
        ({"retrain": {"method": "retrain", "max_epochs": 2.5}}, "`methods.retrain.max_epochs` must be an integer >= 1, got 2.5"),
        (
            {"retrain": {"method": "retrain"}, "ft": {"method": "finetune", "init_args": {"lrr": 0.1}}},
            "methods.ft.init_args.lrr: FineTune takes no argument 'lrr'",
        ),
        (
            {"retrain": {"method": "retrain"}, "ft": {"method": "finetune", "init_args": {"weights": "x.ckpt"}}},
            "methods.ft.init_args.weights: compare passes the original network",
        ),
        ({"retrain": {"method": "retrain", "epochs": 3}}, "`methods.retrain` has unknown key(s) ['epochs']"),
        ({"retrain": {"max_epochs": 3}}, "`methods.retrain` lacks ['method']"),
        (
            {"retrain": {"method": "retrain", "callbacks": [{"callback": "nope"}]}},
            "methods.retrain.callbacks[0].callback: unknown callback 'nope'",
        ),
        (
            {"retrain": {"method": "retrain", "callbacks": [{"name": "x"}]}},
            "methods.retrain.callbacks[0] must be {callback: <name>, init_args: {...}}",
        ),
    ],
)
def test_invalid_methods_fail_before_training(methods: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        run_compare(small_config(**methods))
    assert message in str(exc.value)


def test_run_compare_in_process() -> None:
    result = run_compare(
        small_config(
            retrain={"method": "retrain", "max_epochs": 2, "init_args": {"lr": 0.05}},
            ga={"method": "gradient_ascent", "max_epochs": 1, "init_args": {"lr": 0.01}},
        )
    )
    assert [row["name"] for row in result["rows"]] == ["retrain", "ga"]
    assert result["rows"][1]["class"] == "GradientAscent"
    table = format_table(result)
    assert "| original (before) |" in table and "| ga |" in table
    json.dumps(result)  # JSON-safe


def test_precision_and_cosine_reach_every_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """`precision` reaches the Trainer of every fit; `original.lr_scheduler: cosine` the original."""
    from lightning_unlearn.benchmark import runner

    trainers = []

    def recording_trainer(*args, **kwargs):
        trainers.append(make(*args, **kwargs))
        return trainers[-1]

    make = runner.row_trainer
    monkeypatch.setattr(runner, "row_trainer", recording_trainer)
    config = small_config(retrain={"method": "retrain", "max_epochs": 1})
    config["precision"] = "bf16-mixed"
    config["original"]["lr_scheduler"] = "cosine"
    result = run_compare(config)
    assert [t.precision for t in trainers] == ["bf16-mixed", "bf16-mixed"]  # original, Retrain
    assert trainers[0].optimizers[0].param_groups[0]["lr"] < 1e-9  # annealed to 0
    assert result["config"]["precision"] == "bf16-mixed" and result["config"]["original"]["lr_scheduler"] == "cosine"
    assert 50 <= result["rows"][0]["test_acc"] <= 100


def test_original_max_epochs_is_checked_before_training() -> None:
    config = small_config()
    config["original"]["max_epochs"] = 0
    with pytest.raises(ValueError, match=r"`original.max_epochs` must be an integer >= 1, got 0: set the original"):
        run_compare(config)


def test_run_row_stacks_row_extra_and_evaluation_callbacks(original, digits_classwise) -> None:
    """run_row: the row's callbacks, then the extra ones, then the evaluation; the same row runs
    alike twice (seeded); without evaluation it has no metrics."""
    import lightning as L
    import torch

    from lightning_unlearn.benchmark import MethodSpec, run_row
    from lightning_unlearn.metrics.keys import METRICS

    class Recorder(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            self.names = [type(c).__name__ for c in trainer.callbacks]

    recorder = Recorder()
    spec = MethodSpec("random_label", 1, {"lr": 0.01}, [{"callback": "saliency_mask"}])
    run = run_row(spec, original, digits_classwise, 0, callbacks=[recorder], accelerator="cpu")
    names = recorder.names
    assert names.index("SaliencyMask") < names.index("Recorder") < names.index("UnlearningEvaluation")
    assert set(run.after) == set(METRICS) and run.runtime_s > 0 and run.model is run.method.model
    assert run.evaluation.results["reference"] is None

    again = run_row(spec, original, digits_classwise, 0, evaluation=False, reference=run.model, accelerator="cpu")
    assert again.evaluation is None
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="evaluation=False"):
        _ = again.after


def test_benchmark_package_sits_above_the_library_and_holds_no_metric_keys() -> None:
    """Nothing below ``benchmark/`` imports it; compare.py is gone (one import path); the benchmark
    package and scripts read the metric keys from ``metrics/keys.py`` instead of copying them."""
    import ast

    from lightning_unlearn.metrics.keys import METRICS

    def imported(path: Path) -> Iterator[tuple[str, int]]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                yield from ((alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                yield node.module, node.lineno
                yield from ((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)

    package = ROOT / "lightning_unlearn"
    assert not (package / "compare.py").exists()
    for path in [*package.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        below = path.is_relative_to(package) and path.parent.name != "benchmark" and path.name != "cli.py"
        for module, line in imported(path):
            assert module != "lightning_unlearn.compare", (path, line)  # the old path
            assert not (below and module.startswith("lightning_unlearn.benchmark")), (path, line)
    for path in [*(package / "benchmark").glob("*.py"), ROOT / "benchmarks" / "tune.py", ROOT / "benchmarks" / "quality.py"]:
        text = path.read_text()
        assert not [key for key in METRICS if f'"{key}"' in text or f"'{key}'" in text], path
