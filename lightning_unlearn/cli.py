"""The ``lightning-unlearn`` command: LightningCLI for single runs, plus ``compare``, ``tune``,
``sequential``, ``verify-report`` and ``export``.

``lightning-unlearn fit|validate|test|predict --config configs/<dataset>/<method>.yaml`` is a
:class:`~lightning.pytorch.cli.LightningCLI` in subclass mode: ``model`` is any LightningModule
(an unlearning method, ``ImageClassifier`` for the original, or a user's own), ``data`` any
LightningDataModule, configs may interpolate (``${...}``, omegaconf parser mode) and the trainer's
logger is chosen by class name (``--trainer.logger=WandbLogger``).

``lightning-unlearn compare --config configs/quickstart.yaml --output results.json`` trains the
original, unlearns it with several methods, retrains, and prints the comparison table (see
:mod:`lightning_unlearn.benchmark.compare`).

``lightning-unlearn verify-report REPORT [--forget-indices FILE] [--checkpoint CKPT]`` checks a
report (schema, arithmetic, status, the forget set's fingerprint, the weights' SHA-256) and
exits 0 when every check passes, 1 otherwise (see :func:`lightning_unlearn.report.verify_report`).

``lightning-unlearn export CKPT --out net.pt [--report REPORT]`` writes the network of a checkpoint as
a plain ``state_dict`` (keys of the user's own class) plus a ``net.pt.json`` sidecar with the weights'
and the report's SHA-256 (see :func:`lightning_unlearn.models.export_weights`).

Every method, callback, datamodule and network of the package is known by its short class name
(``--model=SCRUB``, ``--trainer.callbacks+=SaliencyMask``, ``--model.help RandomLabel``) without a
config importing it first; ``--data=my_pkg.MyDataModule --data.forget.classes=[3]`` wraps any
LightningDataModule (:class:`~lightning_unlearn.data.WrappedDataModule`, the other ``--data.*``
options go to the user's datamodule). The optimiser is LightningCLI's ``--optimizer`` (e.g.
``--optimizer=Adam --optimizer.lr=0.001``); ``--model.optimizer`` is refused on the command line
(two options, one of which would silently win).

A ``fit`` embeds the resolved configuration (``--print_config``'s content) in the report of every
:class:`~lightning_unlearn.callbacks.UnlearningEvaluation` on the trainer (``recipe.config``).

jsonargparse, omegaconf and wandb are imported only when the command runs, so importing the
package needs torch, lightning and torchmetrics alone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

DESCRIPTION = """Machine unlearning for PyTorch Lightning.

Single runs (LightningCLI):
  lightning-unlearn fit --config configs/digits/original.yaml       # train the original
  lightning-unlearn fit --config configs/digits/random_label.yaml   # unlearn it, write the report
  lightning-unlearn fit --config configs/digits/random_label.yaml --trainer.logger=WandbLogger

The whole story (original, every method, retrain, table):
  lightning-unlearn compare --config configs/quickstart.yaml --output results.json
  lightning-unlearn compare quickstart     # packaged presets by name: quickstart, digits/<method>
  lightning-unlearn compare --help

Check a report (schema, arithmetic, status, forget-set fingerprint, weights hash; exit 0/1):
  lightning-unlearn verify-report artifacts/digits/random_label_report.json \
      --forget-indices forget.json --checkpoint artifacts/digits/random_label.ckpt

Sequential deletion requests (a chain; relapse on earlier forget sets; chained reports):
  lightning-unlearn sequential --config configs/sequential_digits.yaml --output results_sequential.json

Hyper-parameters on your model and request, without a retrained model:
  lightning-unlearn tune --config configs/quickstart.yaml --rows random_label --budget 0.5 --output tune.json
"""

COMMANDS = """
Commands:
  fit, validate, test, predict   LightningCLI runs (`lightning-unlearn fit --help`)
  compare                        original, methods, Retrain and the table (`compare --help`)
  tune                           choose a method's hyper-parameters without a Retrain (`tune --help`)
  sequential                     a chain of deletion requests, relapse, chained reports (`sequential --help`)
  verify-report                  check a report against forget indices and a checkpoint
  export                         write the unlearned network's state_dict (`export --help`)
  --version                      print the version

Your own data: --data=my_pkg.MyDataModule --data.forget.classes=[3] (wraps its loaders)
Optimiser: --optimizer=Adam --optimizer.lr=0.001 (LightningCLI's; the one optimiser option)
"""


def description() -> str:
    """The top-level help: the examples, the commands and every registered method and callback by
    the short name ``--model=`` / ``--trainer.callbacks+=`` accept."""
    from lightning_unlearn import registry

    methods = ", ".join(e.cls.__name__ for e in registry.entries("method"))
    callbacks = ", ".join(e.cls.__name__ for e in registry.entries("callback"))
    return (
        DESCRIPTION
        + COMMANDS
        + _wrapped("Methods (--model=NAME, --model.help NAME): ", methods)
        + _wrapped("Callbacks (--trainer.callbacks+=NAME): ", callbacks)
    )


def _wrapped(title: str, names: str, width: int = 96) -> str:
    import textwrap

    return "\n" + textwrap.fill(names, width, initial_indent=title, subsequent_indent="  ") + "\n"


def import_parts() -> None:
    """Imports every class the CLI may name, so that jsonargparse resolves short class names
    (``--model=SCRUB``, ``--trainer.callbacks+=SaliencyMask``) without a config importing them."""
    import lightning_unlearn.callbacks
    import lightning_unlearn.data
    import lightning_unlearn.methods
    import lightning_unlearn.models  # noqa: F401


#: Options of :class:`~lightning_unlearn.data.WrappedDataModule` itself; every other ``--data.*``
#: option of a wrapped user datamodule goes to that datamodule.
WRAPPER_OPTIONS = ("forget", "input_key", "target_key")


def wrap_user_datamodule(argv: Sequence[str]) -> list[str]:
    """Rewrites ``--data=my_pkg.MyDataModule --data.forget.classes=[3] --data.x=1`` (any
    LightningDataModule that is not an :class:`~lightning_unlearn.data.UnlearningDataModule`, given
    with a ``--data.forget`` option) into the :class:`~lightning_unlearn.data.WrappedDataModule`
    form: ``--data=WrappedDataModule --data.datamodule=my_pkg.MyDataModule
    --data.forget.classes=[3] --data.datamodule.x=1``. Anything else is returned unchanged."""
    import importlib

    import lightning as L

    from lightning_unlearn.data import UnlearningDataModule

    args = list(argv)
    if not any(a.startswith("--data.forget") for a in args):
        return args
    value, position = None, None
    for i, arg in enumerate(args):
        if arg.startswith("--data="):
            value, position = arg[len("--data=") :], i
        elif arg == "--data" and i + 1 < len(args):
            value, position = args[i + 1], i
    if value is None or "." not in value or value.startswith(("{", "[")):
        return args
    module_name, _, class_name = value.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return args  # LightningCLI reports it
    if not (isinstance(cls, type) and issubclass(cls, L.LightningDataModule)) or issubclass(cls, UnlearningDataModule):
        return args
    out = []
    for i, arg in enumerate(args):
        if i == position:
            out += ["--data=lightning_unlearn.data.WrappedDataModule", f"--data.datamodule={value}"]
        elif position is not None and args[position] == "--data" and i == position + 1:
            continue
        elif arg.startswith("--data.") and not arg.startswith(tuple(f"--data.{o}" for o in WRAPPER_OPTIONS)):
            rest = arg[len("--data.") :]
            rest = rest[len("init_args.") :] if rest.startswith("init_args.") else rest
            out.append(f"--data.datamodule.{rest}")
        else:
            out.append(arg)
    return out


def cli_main(args: Optional[Sequence[str]] = None, run: bool = True) -> Any:
    """Runs LightningCLI with the project's defaults.

    Args:
        args: the command line without the program name (default: ``sys.argv[1:]``).
        run: run the subcommand (``False``: only parse and instantiate, for tests and notebooks;
            then ``args`` holds no subcommand).

    Returns:
        The :class:`~lightning.pytorch.cli.LightningCLI` object.
    """
    _require_cli_dependencies()
    import_parts()
    from argparse import RawDescriptionHelpFormatter

    from jsonargparse import DefaultHelpFormatter
    from lightning.pytorch.cli import LightningCLI

    class HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
        """Keeps the line breaks of the top-level description (its command examples)."""

    class UnlearnCLI(LightningCLI):
        """LightningCLI that hands the resolved configuration to the reports of the fit."""

        def init_parser(self, **kwargs: Any) -> Any:
            from lightning_unlearn import __version__

            parser = super().init_parser(**kwargs)
            parser.add_argument("--version", action="version", version=f"lightning-unlearn {__version__}")
            return parser

        def before_instantiate_classes(self) -> None:
            config: Any = self.config.get(self.subcommand) if self.subcommand else self.config
            default_wandb_project(config)
            model: Any = config.get("model") if config is not None else None
            init_args = model.get("init_args") if hasattr(model, "get") else None
            if init_args is not None and init_args.get("optimizer") is not None:
                self.parser.error(
                    "--model.optimizer is not a command-line option: use LightningCLI's --optimizer, e.g."
                    " --optimizer=Adam --optimizer.lr=0.001 (the one optimiser option; it replaces the method's SGD)."
                )

        def before_fit(self) -> None:
            attach_config(self.trainer, self.parser, self.config, self.subcommand)

    from lightning_unlearn.benchmark.config import resolve_config_args

    if args is None:  # LightningCLI reads sys.argv itself (and warns when given both)
        wrapped = resolve_config_args(wrap_user_datamodule(sys.argv[1:]))
        if wrapped != sys.argv[1:]:
            sys.argv[1:] = wrapped
    return UnlearnCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "parser_mode": "omegaconf",
            "prog": "lightning-unlearn",
            "description": description(),
            "formatter_class": HelpFormatter,
        },
        args=resolve_config_args(wrap_user_datamodule(args)) if args is not None else None,
        run=run,
    )


def default_wandb_project(config: Any) -> None:
    """Gives a ``WandbLogger`` of the trainer that names no project the project
    ``$WANDB_PROJECT``, else ``lightning-unlearn`` (Lightning's default is ``lightning_logs``)."""
    import os

    from lightning_unlearn.benchmark.compare import DEFAULT_WANDB_PROJECT

    trainer = config.get("trainer") if config is not None else None
    loggers = trainer.get("logger") if trainer is not None else None
    logger: Any
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not hasattr(logger, "get") or not str(logger.get("class_path", "")).endswith("WandbLogger"):
            continue
        init_args = logger.get("init_args")
        if init_args is not None and init_args.get("project") is None:
            init_args["project"] = os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT


def attach_config(trainer: Any, parser: Any, config: Any, subcommand: Optional[str]) -> Optional[dict]:
    """Gives every :class:`~lightning_unlearn.callbacks.UnlearningEvaluation` on ``trainer`` the
    resolved configuration of the run (what ``--print_config`` shows), for its report's
    ``recipe.config``. Returns that configuration."""
    import yaml

    from lightning_unlearn.callbacks import UnlearningEvaluation

    resolved = yaml.safe_load(parser.dump(config, skip_none=False, skip_link_targets=False, format="yaml"))
    if subcommand is not None and isinstance(resolved, dict) and isinstance(resolved.get(subcommand), dict):
        resolved = resolved[subcommand]
    for callback in trainer.callbacks:
        if isinstance(callback, UnlearningEvaluation):
            callback.run_config = resolved
    return resolved


def verify_main(args: Sequence[str]) -> int:
    """``lightning-unlearn verify-report``: prints one verdict per check and returns the exit
    status (0: every check passed; 1: at least one failed)."""
    import argparse

    from lightning_unlearn.report import verify_report

    parser = argparse.ArgumentParser(
        prog="lightning-unlearn verify-report",
        description="Verify an unlearning report: its schema and arithmetic, that the run completed, and optionally"
        " that FILE's forget indices hash to its fingerprint and CKPT holds the weights it describes.",
    )
    parser.add_argument("report", metavar="REPORT", help="the JSON report written by UnlearningEvaluation")
    parser.add_argument(
        "--forget-indices",
        metavar="FILE",
        default=None,
        help="the forget-set positions (JSON list, .npy, .pt or whitespace/comma-separated text)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="CKPT",
        default=None,
        help="the unlearned model (Lightning checkpoint or state_dict), read with weights_only=True",
    )
    options = parser.parse_args(list(args))
    checks = verify_report(options.report, options.forget_indices, options.checkpoint)
    for check in checks:
        print(check.line(), flush=True)
    failed = sum(not check.ok for check in checks)
    print(f"{'NOT VERIFIED' if failed else 'VERIFIED'}: {len(checks) - failed} of {len(checks)} checks passed", flush=True)
    return 1 if failed else 0


#: Subcommands served by the benchmark layer: name -> module with a ``main(argv)``.
BENCHMARK_COMMANDS = {
    "compare": "lightning_unlearn.benchmark.compare",
    "sequential": "lightning_unlearn.benchmark.sequential",
    "tune": "lightning_unlearn.benchmark.tuning",
}


def export_main(args: Sequence[str]) -> Path:
    """``lightning-unlearn export CKPT --out net.pt [--report REPORT]``: the network of a Lightning
    checkpoint of a method or ``ImageClassifier`` (its ``model.*`` entries, prefix removed: the keys
    of the user's own class) or of a ``state_dict`` file, written atomically with a ``net.pt.json``
    sidecar (weights' SHA-256, the report's SHA-256 and whether it describes these weights)."""
    import argparse

    from lightning_unlearn.models.weights import export_weights, read_state_dict

    parser = argparse.ArgumentParser(
        prog="lightning-unlearn export",
        description="Write the unlearned network of a checkpoint as a plain state_dict, loadable with"
        " MyNet().load_state_dict(torch.load(OUT, weights_only=True)), plus OUT.json with its SHA-256 and the report's.",
    )
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="a Lightning checkpoint of a method/ImageClassifier, or a state_dict file"
    )
    parser.add_argument("--out", required=True, metavar="OUT", help="where to write the state_dict, e.g. net.pt")
    parser.add_argument("--report", default=None, metavar="REPORT", help="the JSON report of the run (its hash goes in OUT.json)")
    options = parser.parse_args(list(args))
    try:
        state = read_state_dict(options.checkpoint, name="CKPT")
        path = export_weights(state, options.out, report=options.report, source=str(options.checkpoint))
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print(f"Wrote {path} (and {path}.json)", flush=True)
    return path


def main(args: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``lightning-unlearn`` console script.

    ``compare`` goes to :func:`lightning_unlearn.benchmark.compare.main`, ``tune`` to
    :func:`lightning_unlearn.benchmark.tuning.main`, ``sequential`` to
    :func:`lightning_unlearn.benchmark.sequential.main`, ``export`` to :func:`export_main`,
    ``verify-report`` to :func:`verify_main` (a failed verification exits with status 1); every
    other subcommand
    (``fit``, ``validate``, ``test``, ``predict``) to :func:`cli_main`.

    Args:
        args: the command line without the program name (default: ``sys.argv[1:]``).

    Returns ``None`` (the console script's exit status 0); use :func:`cli_main` for the
    LightningCLI object and :func:`lightning_unlearn.benchmark.run_compare` for the results.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in BENCHMARK_COMMANDS:
        import importlib

        importlib.import_module(BENCHMARK_COMMANDS[argv[0]]).main(argv[1:])
        return
    if argv and argv[0] == "export":
        export_main(argv[1:])
        return
    if argv and argv[0] == "verify-report":
        status = verify_main(argv[1:])
        if status:
            raise SystemExit(status)
        return
    # LightningCLI reads sys.argv itself when args is None (and warns when given both).
    cli_main(None if args is None else argv)


def _require_cli_dependencies() -> None:
    missing = []
    for name in ("jsonargparse", "omegaconf"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f'The lightning-unlearn command needs {", ".join(missing)}: run `pip install "jsonargparse[signatures]" omegaconf`.'
        )


if __name__ == "__main__":  # python -m lightning_unlearn.cli
    main()
