"""End-to-end tests of the ``lightning-unlearn`` LightningCLI entry point on the digits configs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "lightning_unlearn" / "configs" / "digits"
SINGLE_RUN_CONFIGS = sorted(p for p in DIGITS.glob("*.yaml") if not p.name.startswith("compare"))


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs ``python -m lightning_unlearn.cli ARGS`` in ``cwd`` (relative paths of the configs land there)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    # a W&B service started by an in-process test of this session must not be shared: the command's
    # own service writes (and flushes) its run log before the command exits
    full_env.pop("WANDB_SERVICE", None)
    return subprocess.run(
        [sys.executable, "-m", "lightning_unlearn.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def original_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lightning-unlearn fit --config configs/digits/original.yaml`` (5 epochs) -> original.ckpt."""
    workdir = tmp_path_factory.mktemp("original")
    check(
        run_cli(
            "fit",
            "--config",
            str(DIGITS / "original.yaml"),
            "--trainer.max_epochs=5",
            "--trainer.enable_progress_bar=false",
            cwd=workdir,
        )
    )
    ckpt = workdir / "artifacts" / "digits" / "original.ckpt"
    assert ckpt.is_file(), sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    assert (workdir / "artifacts" / "digits" / "config.yaml").is_file()  # LightningCLI saved the config
    return ckpt


def workdir_with_original(tmp_path: Path, original_ckpt: Path) -> Path:
    target = tmp_path / "artifacts" / "digits"
    target.mkdir(parents=True)
    shutil.copy(original_ckpt, target / "original.ckpt")
    return tmp_path


@pytest.mark.parametrize("config", SINGLE_RUN_CONFIGS, ids=lambda p: p.stem)
def test_every_digits_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    from lightning_unlearn.cli import cli_main

    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "DigitsDataModule" in printed and "max_epochs" in printed
    if config.stem != "original":
        assert "weights: artifacts/digits/original.ckpt" in printed
        assert f"report_path: artifacts/digits/{config.stem}_report.json" in printed


def test_help_mentions_compare(tmp_path: Path) -> None:
    proc = check(run_cli("--help", cwd=tmp_path))
    assert "compare --config configs/quickstart.yaml" in proc.stdout
    assert "fit" in proc.stdout


def test_fit_random_label_forgets_and_writes_report(original_ckpt: Path, tmp_path: Path) -> None:
    workdir = workdir_with_original(tmp_path, original_ckpt)
    check(
        run_cli(
            "fit",
            "--config",
            str(DIGITS / "random_label.yaml"),
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
            cwd=workdir,
        )
    )
    out = workdir / "artifacts" / "digits"
    report = json.loads((out / "random_label_report.json").read_text())
    before, after = report["metrics"]["before"], report["metrics"]["after"]
    assert report["method"] == "RandomLabel" and report["status"] == "completed"
    assert report["recipe"]["method"]["name"] == "random_label"
    assert not any(k.startswith("_") for k in report["hyperparameters"])  # no LightningCLI internals
    assert before["forget_acc"] > 0.9, "the original should recognise class 3"
    assert after["forget_acc"] < before["forget_acc"] - 0.5, (before, after)
    assert after["unlearning_accuracy"] > 0.5
    assert after["retain_acc"] > 0.9, "unlearning must keep the retained classes"
    assert report["forget"]["count"] > 0 and len(report["forget"]["fingerprint"]) == 64
    assert (out / "random_label.ckpt").is_file()  # the unlearned model is a new checkpoint
    assert original_ckpt.read_bytes() == (out / "original.ckpt").read_bytes()  # the original is untouched
    metrics_csv = next((out / "logs" / "random_label").rglob("metrics.csv"))
    with metrics_csv.open() as handle:
        columns = next(csv.reader(handle))
    assert "unlearn/forget_acc" in columns and "unlearn/before/forget_acc" in columns


def wandb_recipe(run_dir: Path, timeout: float = 60.0) -> dict:
    """The ``unlearn/recipe`` entry of an offline run's config. W&B's service process may still be
    writing the run's log after the command exited, so this waits for it (up to ``timeout`` s)."""
    import time

    from tests.callbacks.test_evaluation import _wandb_config

    deadline = time.monotonic() + timeout
    while True:
        files = list(run_dir.glob("run-*.wandb"))
        config = _wandb_config(files[0]) if files else {}
        if "unlearn/recipe" in config or time.monotonic() > deadline:
            assert "unlearn/recipe" in config, f"no recipe in the W&B config of {run_dir}: {sorted(config)}"
            return config["unlearn/recipe"]
        time.sleep(0.5)


def test_fit_with_wandb_logger_by_class_name(original_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """W&B by class name, and provenance from the CLI: a LightningCLI ``--optimizer`` replaces the
    method's SGD and the report says so; the resolved config is in the report and the recipe in the
    W&B config; the printed summary names the report; the checkpoint verifies against it."""
    pytest.importorskip("wandb")
    from lightning_unlearn.cli import main

    workdir = workdir_with_original(tmp_path, original_ckpt)
    proc = check(
        run_cli(
            "fit",
            "--config",
            str(DIGITS / "gradient_ascent.yaml"),
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=WandbLogger",
            "--trainer.logger.save_dir=wb",
            "--optimizer=Adam",
            "--optimizer.lr=0.0005",
            cwd=workdir,
            env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
        )
    )
    runs = list((workdir / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((workdir / "wb").rglob("*"))
    tables = list(runs[0].rglob("*.table.json"))
    assert tables, "UnlearningEvaluation logs its summary table to W&B"
    assert "forget_acc" in tables[0].read_text()
    out = workdir / "artifacts" / "digits"
    report = json.loads((out / "gradient_ascent_report.json").read_text())
    assert report["recipe"]["optimizers"][0]["class"] == "torch.optim.Adam"
    assert report["recipe"]["optimizers"][0]["param_groups"][0]["lr"] == 0.0005
    hyperparameters = report["hyperparameters"]
    assert hyperparameters["optimizer"] == "torch.optim.Adam" and hyperparameters["lr"] == 0.0005
    assert "momentum" not in hyperparameters and not any(k.startswith("_") for k in hyperparameters)
    config = report["recipe"]["config"]
    assert config["optimizer"]["class_path"] == "torch.optim.Adam" and config["trainer"]["max_epochs"] == 1
    assert config["model"]["class_path"] == "lightning_unlearn.methods.GradientAscent"
    recipe = wandb_recipe(runs[0])
    assert recipe.get("value", recipe)["optimizers"][0]["class"] == "torch.optim.Adam"
    assert "UnlearningEvaluation: completed" in proc.stderr
    assert "Report: artifacts/digits/gradient_ascent_report.json" in proc.stderr
    main(["verify-report", str(out / "gradient_ascent_report.json"), "--checkpoint", str(out / "gradient_ascent.ckpt")])
    assert capsys.readouterr().out.strip().endswith("VERIFIED: 4 of 4 checks passed")


def test_missing_original_fails_with_the_fix(tmp_path: Path) -> None:
    proc = run_cli("fit", "--config", str(DIGITS / "finetune.yaml"), cwd=tmp_path)
    assert proc.returncode != 0
    assert "artifacts/digits/original.ckpt" in proc.stderr
    assert "lightning-unlearn fit --config configs/digits/original.yaml" in proc.stderr


def test_cli_modules_import_the_cli_stack_lazily() -> None:
    code = (
        "import sys; import lightning_unlearn, lightning_unlearn.cli, lightning_unlearn.benchmark;"
        " print(sorted(m for m in ('jsonargparse', 'omegaconf', 'wandb') if m in sys.modules))"
    )
    proc = check(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120))
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model.lr_scheduler=cosine"], "lr_scheduler: cosine"),
        (
            ["--model.lr_scheduler=torch.optim.lr_scheduler.StepLR", "--model.lr_scheduler.step_size=2"],
            "class_path: torch.optim.lr_scheduler.StepLR",
        ),
    ],
)
def test_lr_scheduler_by_name_or_class(args: list[str], expected: str, capsys: pytest.CaptureFixture) -> None:
    from lightning_unlearn.cli import cli_main

    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(DIGITS / "retrain.yaml"), *args, "--print_config"])
    assert exc.value.code in (0, None)
    assert expected in capsys.readouterr().out


@pytest.mark.parametrize(
    "config, expected, absent",
    [
        ("gradient_ascent.yaml", {"lr": 0.001, "momentum": 0.9, "weight_decay": 0.0, "inplace": False, "epoch_split": None}, []),
        ("retrain.yaml", {"init_seed": 0, "momentum": 0.9, "weight_decay": 0.0005, "epoch_split": None}, ["inplace"]),
        ("scrub.yaml", {"temperature": 4.0, "msteps": 2, "momentum": 0.9, "inplace": False}, ["epoch_split"]),
        (
            "bad_teacher.yaml",
            {"retain_fraction": 0.3, "weight_decay": 0.0, "optimizer": None, "inplace": False},
            ["momentum", "epoch_split"],
        ),
        ("ssd.yaml", {"alpha": 5.0, "lam": 1.0, "inplace": False}, ["lr", "momentum", "optimizer"]),
    ],
)
def test_print_config_lists_every_default_of_a_method(config, expected, absent, capsys: pytest.CaptureFixture) -> None:
    """Methods declare only their own arguments and forward the shared ones by keyword: LightningCLI
    follows the ``**kwargs``, so every argument still shows with its default (and those a method fixes
    itself, such as Retrain's ``inplace=False``, do not)."""
    import yaml

    from lightning_unlearn.cli import cli_main

    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(DIGITS / config), "--print_config"])
    init_args = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    for key, value in expected.items():
        if key not in ("lr",):  # the config may set lr
            assert init_args[key] == value, (key, init_args)
    for key in absent:
        assert key not in init_args, key
    assert "weights" in init_args and "kwargs" not in init_args
