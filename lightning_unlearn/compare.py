"""``lightning-unlearn compare``: the whole story on one config.

Train the original classifier on the full training set, unlearn it with several methods, retrain
from scratch without the forget set (the gold standard), and print the paper-style table: UA, RA,
TA and MIA-efficacy in percent, each with its distance to Retrain, the Avg. Gap to Retrain and
the run time of the unlearning itself.

The config (YAML; ``${...}`` interpolation is resolved after command-line overrides)::

    seed: 0
    accelerator: auto
    mia_backend: torch
    precision: null           # Lightning precision of every fit, e.g. bf16-mixed
    data:                     # an UnlearningDataModule subclass
      class_path: lightning_unlearn.data.DigitsDataModule
      init_args: {forget: {ratio: 0.1, seed: 0}}
    model:                    # the architecture (an nn.Module returning logits)
      class_path: lightning_unlearn.models.SmallCNN
      init_args: {in_channels: 1, num_classes: 10}
    original: {max_epochs: 20, lr: 0.05, lr_scheduler: cosine}   # ImageClassifier's arguments
    methods:                  # name -> registry name, epochs, init arguments
      retrain: {method: retrain, max_epochs: ${original.max_epochs}, init_args: {lr: ${original.lr}}}
      finetune: {method: finetune, max_epochs: 5, init_args: {lr: 0.01}}

Example::

    lightning-unlearn compare --config configs/quickstart.yaml --output results.json
    lightning-unlearn compare --config configs/quickstart.yaml --original.max_epochs=5

jsonargparse and omegaconf are imported inside the functions that parse, so importing this
module needs torch and lightning alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Optional, Sequence, Union

from torch import nn

#: Table columns: header, metric key of :func:`lightning_unlearn.evaluation.evaluate`.
COLUMNS = (
    ("UA", "unlearning_accuracy"),
    ("RA", "retain_acc"),
    ("TA", "test_acc"),
    ("MIA-Efficacy", "mia_efficacy"),
)
REFERENCE = "retrain"


@dataclass
class OriginalSpec:
    """How the original model is trained: :class:`~lightning_unlearn.models.ImageClassifier` on
    the whole training set (the forget set included).

    Args:
        max_epochs: training epochs.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        lr_scheduler: ``None`` (constant ``lr``) or ``"cosine"`` (annealed to 0 over the fit).
    """

    max_epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_scheduler: Optional[Literal["cosine"]] = None


@dataclass
class MethodSpec:
    """One row of the comparison.

    Args:
        method: the registry name (``lightning_unlearn.registry``), e.g. ``"retrain"``,
            ``"finetune"``, ``"gradient_ascent"``, ``"neggrad_plus"``, ``"random_label"``.
        max_epochs: epochs of unlearning (of training, for Retrain).
        init_args: the method's init arguments other than ``model`` and ``weights`` (compare
            hands it the original network itself).
        callbacks: callbacks stacked on the method, in order, each
            ``{callback: <registry name>, init_args: {...}}`` (e.g. SalUn =
            ``random_label`` + ``[{callback: saliency_mask}]``).
    """

    method: str
    max_epochs: int = 5
    init_args: dict[str, Any] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------- parsing
def build_parser(exit_on_error: bool = True) -> Any:
    """The jsonargparse parser of a compare config (``omegaconf+`` mode: interpolation is resolved
    on the final config, so ``--original.max_epochs=5`` also reaches ``${original.max_epochs}``).

    Args:
        exit_on_error: print usage and exit on a bad config (the command line); ``False`` raises
            instead (library use).
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_unlearn.data.datamodule import UnlearningDataModule

    parser = ArgumentParser(
        prog="lightning-unlearn compare",
        parser_mode="omegaconf+",
        exit_on_error=exit_on_error,
        description=(
            "Train the original model, unlearn it with several methods, retrain without the forget set"
            " and print UA / RA / TA / MIA-efficacy / Avg. Gap to Retrain / run time."
        ),
    )
    parser.add_argument("--config", action=ActionConfigFile, help="A compare YAML, e.g. configs/quickstart.yaml.")
    parser.add_argument("--seed", type=int, default=0, help="Global seed (set again before every method).")
    parser.add_subclass_arguments(UnlearningDataModule, "data", required=True, help="The data and the forget request.")
    parser.add_subclass_arguments(nn.Module, "model", required=True, help="The architecture, returning logits.")
    parser.add_argument("--original", type=OriginalSpec, default=OriginalSpec(), help="Training of the original.")
    # Plain mappings (checked by check_methods): a dataclass with an `init_args` field would be
    # read by jsonargparse as a subclass specification.
    parser.add_argument("--methods", type=dict[str, dict[str, Any]], required=True,
                        help="Ordered mapping: row name -> {method, max_epochs, init_args}; must include retrain.")
    parser.add_argument("--accelerator", type=str, default="auto", help="Lightning accelerator.")
    parser.add_argument("--precision", type=Optional[str], default=None,
                        help="Lightning precision of every fit, e.g. bf16-mixed (evaluation runs in float32).")
    parser.add_argument("--mia_backend", type=Literal["torch", "sklearn"], default="torch", help="MIA attack backend.")
    parser.add_argument("--output", type=Optional[str], default=None, help="Where to write the JSON results.")
    return parser


def parse_config(config: Union[str, os.PathLike, Mapping[str, Any], Any], instantiate: bool = True) -> Any:
    """Parses a compare config (a YAML path, a mapping, or an already parsed Namespace).

    Args:
        config: the config.
        instantiate: also build ``data`` and ``model`` (after ``seed_everything(seed)``, so the
            network's initial weights depend on the seed alone).

    Raises:
        ValueError: when the config does not parse (the message names the offending key).
    """
    from jsonargparse import ArgumentError, Namespace

    parser = build_parser(exit_on_error=False)
    if isinstance(config, Namespace):
        cfg = config
    else:
        where = "(a mapping)" if isinstance(config, Mapping) else os.fspath(config)
        try:
            if isinstance(config, Mapping):
                cfg = parser.parse_object(dict(config))
            else:
                cfg = parser.parse_args(["--config", os.fspath(config)])
        except ArgumentError as exc:
            raise ValueError(f"Invalid compare config {where}: {exc}") from exc
    if not instantiate:
        return cfg
    import lightning as L

    L.seed_everything(int(cfg.seed), verbose=False)
    return parser.instantiate_classes(cfg)


def _spec(value: Any, cls: type, where: str) -> Any:
    if isinstance(value, cls):
        return value
    if is_dataclass(value):
        value = asdict(value)
    elif hasattr(value, "as_dict"):
        value = value.as_dict()
    if not isinstance(value, Mapping):
        raise ValueError(f"`{where}` must be a mapping with keys {[f.name for f in fields(cls)]}, got {value!r}.")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ValueError(f"`{where}` has unknown key(s) {unknown}: allowed are {names}.")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in value]
    if missing:
        raise ValueError(f"`{where}` lacks {missing}: e.g. {{method: finetune, max_epochs: 5, init_args: {{lr: 0.01}}}}.")
    return cls(**dict(value))


def check_methods(methods: Mapping[str, Any]) -> dict[str, MethodSpec]:
    """Validates the ``methods`` mapping before anything is trained.

    Returns:
        The mapping as :class:`MethodSpec` objects, in config order.

    Raises:
        ValueError: no method, no Retrain row, an unknown registry name, a non-positive
            ``max_epochs``, or an init argument the method does not take (or sets ``model``/``weights``,
            which compare provides).
    """
    from lightning_unlearn import registry

    specs = {str(name): _spec(spec, MethodSpec, f"methods.{name}") for name, spec in (methods or {}).items()}
    if not specs:
        raise ValueError("`methods` is empty: list at least `retrain: {method: retrain, max_epochs: ...}`.")
    known = [e.name for e in registry.entries("method")]
    for name, spec in specs.items():
        if spec.method not in known:
            raise ValueError(
                f"methods.{name}.method: unknown method {spec.method!r}. Registered methods: {known}."
            )
        if not isinstance(spec.init_args, Mapping):
            raise ValueError(f"methods.{name}.init_args must be a mapping of the method's arguments, got {spec.init_args!r}.")
        if isinstance(spec.max_epochs, bool) or not isinstance(spec.max_epochs, int) or spec.max_epochs < 1:
            raise ValueError(f"methods.{name}.max_epochs must be >= 1, got {spec.max_epochs}.")
        accepted = list(registry.init_parameters(registry.get(spec.method).cls))
        for arg in spec.init_args:
            if arg in ("model", "weights"):
                raise ValueError(
                    f"methods.{name}.init_args.{arg}: compare passes the original network itself; remove `{arg}`."
                )
            if arg not in accepted:
                raise ValueError(
                    f"methods.{name}.init_args.{arg}: {registry.get(spec.method).cls.__name__} takes no argument"
                    f" {arg!r}; it takes {[a for a in accepted if a not in ('model', 'weights')]}."
                )
        _check_callbacks(name, spec.callbacks)
    if not any(spec.method == REFERENCE for spec in specs.values()):
        raise ValueError(
            "`methods` has no Retrain row: add `retrain: {method: retrain, max_epochs: ...}`; it is the"
            " reference of every gap."
        )
    return specs


def _check_callbacks(name: str, callbacks: Any) -> None:
    from lightning_unlearn import registry

    known = [e.name for e in registry.entries("callback") if e.name != "evaluation"]
    if not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"methods.{name}.callbacks must be a list of {{callback: name, init_args: {{...}}}}, got {callbacks!r}.")
    for i, item in enumerate(callbacks):
        where = f"methods.{name}.callbacks[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"callback", "init_args"} or "callback" not in item:
            raise ValueError(f"{where} must be {{callback: <name>, init_args: {{...}}}}, got {item!r}.")
        if item["callback"] not in known:
            raise ValueError(f"{where}.callback: unknown callback {item['callback']!r}. Registered callbacks: {known}.")
        accepted = list(registry.init_parameters(registry.get(item["callback"]).cls))
        for arg in item.get("init_args") or {}:
            if arg not in accepted:
                raise ValueError(f"{where}.init_args.{arg}: {registry.get(item['callback']).cls.__name__} takes {accepted}.")


def build_method(spec: MethodSpec, original: nn.Module, seed: int) -> Any:
    """The row's method around (a copy of) ``original``, after ``seed_everything(seed)`` so a row
    does not depend on the rows before it; Retrain's ``init_seed`` defaults to ``seed``."""
    import lightning as L

    from lightning_unlearn import registry

    L.seed_everything(seed, verbose=False)
    init_args = dict(spec.init_args)
    if spec.method == REFERENCE:  # the compare seed also draws Retrain's initial weights
        init_args.setdefault("init_seed", seed)
    return registry.get(spec.method).cls(model=original, **init_args)


def build_callbacks(spec: MethodSpec) -> list[Any]:
    """The callbacks of a row, instantiated from the registry in config order."""
    from lightning_unlearn import registry

    return [registry.get(c["callback"]).cls(**dict(c.get("init_args") or {})) for c in spec.callbacks]


# ---------------------------------------------------------------------------------- running
def trainer_options(cfg: Any) -> dict[str, Any]:
    """The Trainer settings a compare config fixes for every fit: ``accelerator`` and ``precision``."""
    return {"accelerator": cfg.accelerator, "precision": cfg.get("precision")}


def row_trainer(max_epochs: int, callbacks: Sequence[Any] = (), *, accelerator: str = "auto",
                precision: Optional[str] = None) -> Any:
    """The Trainer of the original and of every row: one device, no logger, checkpoints, progress
    bar or validation."""
    import lightning as L

    return L.Trainer(
        max_epochs=int(max_epochs), accelerator=accelerator, precision=precision, devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=list(callbacks),
    )


@contextlib.contextmanager
def quiet_fit_warnings() -> Iterator[None]:
    """Silences Lightning's few-workers and empty-validation warnings of these short fits."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*Total length of .* across ranks is zero.*")
        yield


def train_original(network: nn.Module, datamodule: Any, spec: OriginalSpec, seed: int, **options: Any) -> tuple[nn.Module, float]:
    """Trains ``network`` in place as :class:`~lightning_unlearn.models.ImageClassifier` on the whole
    training set (the forget set included) after ``seed_everything(seed)``; ``options`` go to
    :func:`row_trainer`.

    Returns:
        The trained network (left in its mode: Lightning keeps submodule modes in fit) and the
        wall time of the fit in seconds.
    """
    import lightning as L

    from lightning_unlearn.models import ImageClassifier

    L.seed_everything(seed, verbose=False)
    classifier = ImageClassifier(
        network, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, lr_scheduler=spec.lr_scheduler
    )
    tic = time.perf_counter()
    row_trainer(spec.max_epochs, **options).fit(classifier, datamodule=datamodule)
    return classifier.model, time.perf_counter() - tic


def load_config(config: Union[str, os.PathLike, Mapping[str, Any], Any]) -> tuple[Any, dict[str, MethodSpec], OriginalSpec]:
    """Checks a compare config, then builds its datamodule and network.

    Returns:
        ``(cfg, specs, original_spec)``: the instantiated config (``cfg.data``, ``cfg.model``),
        the checked rows and the original's training.

    Raises:
        ValueError: for an invalid config, before anything is built or trained.
    """
    from lightning_unlearn.data.datamodule import UnlearningDataModule

    specs = check_methods(parse_config(config, instantiate=False).methods)  # fail before building anything
    cfg = parse_config(config)
    original_spec = _spec(cfg.original, OriginalSpec, "original")
    if not isinstance(cfg.data, UnlearningDataModule):
        raise ValueError(f"`data` must be an UnlearningDataModule (e.g. DigitsDataModule), got {type(cfg.data).__name__}.")
    if not isinstance(cfg.model, nn.Module):
        raise ValueError(f"`model` must be an nn.Module returning logits, got {type(cfg.model).__name__}.")
    if int(original_spec.max_epochs) < 1:
        raise ValueError(f"original.max_epochs must be >= 1, got {original_spec.max_epochs}.")
    return cfg, specs, original_spec


def run_compare(config: Union[str, os.PathLike, Mapping[str, Any], Any]) -> dict[str, Any]:
    """Runs the comparison.

    Trains the original (:class:`~lightning_unlearn.models.ImageClassifier`, whole training set),
    then every method in ``methods`` around a copy of it, Retrain first. Each method runs in its own
    ``Trainer(max_epochs, logger=False, enable_checkpointing=False)`` with an
    :class:`~lightning_unlearn.callbacks.UnlearningEvaluation` callback (the retrained model as
    reference), after ``seed_everything(seed)``, so a row does not depend on the rows before it.
    Retrain's ``init_seed`` defaults to ``seed``.

    Args:
        config: a YAML path, a mapping with the same keys, or a parsed jsonargparse Namespace.

    Returns:
        ``{"config", "forget", "original", "rows", "total_time_s", "versions"}``. Each row holds the
        row name, the registry ``method``, the ``class``, ``max_epochs``, ``init_args``, the four
        metrics in percent (2 decimals) under their evaluation keys (``unlearning_accuracy``,
        ``retain_acc``, ``test_acc``, ``mia_efficacy``), ``gap`` (``|x - Retrain|`` per metric,
        points), ``avg_gap`` (their mean), ``runtime_s`` (the unlearning fit without evaluation) and
        ``forget_acc``. The Retrain row's gaps are 0.

    Raises:
        ValueError: for an invalid config (unknown method, no Retrain row, bad init arguments),
            before anything is trained.
    """
    from lightning_unlearn import registry
    from lightning_unlearn.callbacks import UnlearningEvaluation
    from lightning_unlearn.metrics.evaluation import evaluate
    from lightning_unlearn.report import versions

    cfg, specs, original_spec = load_config(config)
    datamodule, network = cfg.data, cfg.model
    seed, mia_backend = int(cfg.seed), cfg.mia_backend

    start = time.perf_counter()
    with quiet_fit_warnings():
        original, original_time = train_original(network, datamodule, original_spec, seed, **trainer_options(cfg))
        original_metrics = evaluate(original, datamodule, mia_backend=mia_backend)

        reference_name = next(name for name, spec in specs.items() if spec.method == REFERENCE)
        order = [reference_name] + [name for name in specs if name != reference_name]
        results: dict[str, dict[str, Any]] = {}
        retrained: Optional[nn.Module] = None
        for name in order:
            spec = specs[name]
            method = build_method(spec, original, seed)
            evaluation = UnlearningEvaluation(reference=retrained, mia_backend=mia_backend)
            callbacks = [*build_callbacks(spec), evaluation]
            row_trainer(spec.max_epochs, callbacks, **trainer_options(cfg)).fit(method, datamodule=datamodule)
            results[name] = {"after": evaluation.results["after"], "runtime_s": evaluation.results["runtime_s"]}
            if name == reference_name:
                retrained = method.model

    reference = _percent(results[reference_name]["after"])
    rows = []
    for name in order:
        spec, metrics = specs[name], _percent(results[name]["after"])
        gap = {key: round(abs(metrics[key] - reference[key]), 2) for _, key in COLUMNS}
        rows.append({
            "name": name,
            "method": spec.method,
            "class": registry.get(spec.method).cls.__name__,
            "max_epochs": int(spec.max_epochs),
            "init_args": _json_safe(spec.init_args),
            "callbacks": _json_safe(spec.callbacks),
            **{key: metrics[key] for _, key in COLUMNS},
            "forget_acc": metrics["forget_acc"],
            "gap": gap,
            "avg_gap": round(sum(abs(metrics[key] - reference[key]) for _, key in COLUMNS) / len(COLUMNS), 2),
            "runtime_s": round(float(results[name]["runtime_s"]), 3),
        })
    return {
        "config": {
            "seed": seed,
            "accelerator": cfg.accelerator,
            "precision": cfg.get("precision"),
            "mia_backend": mia_backend,
            "data": {"class": type(datamodule).__name__, "forget": datamodule.forget.to_dict()},
            "model": {"class": type(network).__name__,
                      "parameters": sum(p.numel() for p in network.parameters())},
            "original": asdict(original_spec),
            "methods": {name: {"method": s.method, "max_epochs": int(s.max_epochs), "init_args": _json_safe(s.init_args),
                               "callbacks": _json_safe(s.callbacks)}
                        for name, s in specs.items()},
        },
        "forget": {
            "count": len(datamodule.forget_indices),
            "retain_count": len(datamodule.retain_indices),
            "fingerprint": datamodule.fingerprint,
            "spec": datamodule.forget.to_dict(),
        },
        "original": {**_percent(original_metrics), "runtime_s": round(original_time, 3)},
        "rows": rows,
        "total_time_s": round(time.perf_counter() - start, 3),
        "versions": versions(),
    }


def _percent(metrics: Mapping[str, float]) -> dict[str, float]:
    return {key: round(100.0 * float(value), 2) for key, value in metrics.items()}


def _json_safe(value: Any) -> Any:
    from lightning_unlearn.report import json_safe

    return json_safe(value)


# ---------------------------------------------------------------------------------- output
def format_table(result: Mapping[str, Any]) -> str:
    """The comparison as a markdown table in the style of SalUn / l1-sparse: each metric with its
    distance to Retrain in parentheses, then Avg. Gap and the run time (RTE, seconds). The original
    model's row comes first, for scale (it has no gap)."""
    header = ["Method"] + [title for title, _ in COLUMNS] + ["Avg. Gap", "RTE (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    original = result["original"]
    cells = ["original (before)"] + [f"{original[key]:.2f}" for _, key in COLUMNS] + ["-", f"{original['runtime_s']:.2f}"]
    lines.append("| " + " | ".join(cells) + " |")
    for row in result["rows"]:
        cells = [row["name"]]
        cells += [f"{row[key]:.2f} ({row['gap'][key]:.2f})" for _, key in COLUMNS]
        cells += [f"{row['avg_gap']:.2f}", f"{row['runtime_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    forget = result["forget"]
    spec = ", ".join(f"{k}={v}" for k, v in forget["spec"].items() if v is not None)
    caption = (
        f"Forget {forget['count']} of {forget['count'] + forget['retain_count']} training examples ({spec});"
        f" metrics in %, (|gap| to {REFERENCE}); fingerprint {forget['fingerprint'][:12]}."
    )
    return caption + "\n\n" + "\n".join(lines)


def main(args: Optional[Sequence[str]] = None) -> None:
    """``lightning-unlearn compare``: parses the command line, runs :func:`run_compare`, prints the
    table and writes ``--output`` when given.

    Args:
        args: the command line after ``compare`` (default: ``sys.argv[2:]``).

    Use :func:`run_compare` to get the results as a dict; this function returns ``None`` so that
    the console script exits with status 0.
    """
    import sys

    parser = build_parser()
    cfg = parser.parse_args(list(sys.argv[2:] if args is None else args))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    try:
        result = run_compare(cfg)
    except ValueError as exc:
        parser.error(str(exc))
    print(format_table(result), flush=True)
    if cfg.output:
        path = Path(cfg.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nWrote {path}", flush=True)
