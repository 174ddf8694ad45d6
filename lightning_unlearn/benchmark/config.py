"""The compare config: its schema (:class:`OriginalSpec`, :class:`MethodSpec`), its parser and its
checks, all run before anything is built or trained.

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
    originals:                # optional: more originals, sparse ones made by a pipeline (PipelineSpec)
      sparse95: {pipeline: omp, amount: 0.95, rewind_epoch: 1}
    methods:                  # name -> registry name, epochs, init arguments
      retrain: {method: retrain, max_epochs: ${original.max_epochs}, init_args: {lr: ${original.lr}}}
      finetune: {method: finetune, max_epochs: 5, init_args: {lr: 0.01}}
      retrain_sparse95: {method: retrain, original: sparse95, max_epochs: ${original.max_epochs}}
      finetune_sparse95: {method: finetune, original: sparse95, max_epochs: 5}

Every row unlearns the original it names (``original``, default ``dense``: the one ``original``
trains) and is measured against a Retrain row of that same original (``reference``, default its
first Retrain row), so dense and sparse rows stand in one table, each with the right Retrain.

jsonargparse and omegaconf are imported inside the functions that parse, so importing this
module needs torch and lightning alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import KW_ONLY, MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from torch import nn

from lightning_unlearn import registry
from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.validation import check_bool, check_fraction, check_int

#: Registry name of the reference method: every gap is measured to its row.
REFERENCE = "retrain"
#: Name of the original that ``original:`` trains (the default of every row's ``original``).
DENSE = "dense"
#: How ``originals:`` entries are made (see :class:`PipelineSpec`).
PIPELINES = ("omp", "lottery")

Config = Union[str, os.PathLike, Mapping[str, Any], Any]


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
        original: the original this row unlearns: ``"dense"`` (the one ``original`` trains) or a
            name in ``originals``. A Retrain row of a sparse original is that original's Retrain:
            the same mask (``omp``: ``mask: model``) or the same pipeline from the same
            initialisation on D_r (``lottery``: its pruning callback, ``init_seed``, epochs and
            optimiser), filled in by compare; every other row of a sparse original unlearns under its
            mask (``KeepTopology``, added by compare).
        reference: the Retrain row every gap of this row is measured to (default: the first
            Retrain row of the same original). A Retrain row with a reference is a noise-floor row
            (e.g. another data order): its gaps are what chance alone gives.
        shuffle_seed: the data order of this row's fit (default: the datamodule's), e.g. the
            reference' of the topology noise floor.
        trainer: Trainer settings of this row's fit among :data:`ROW_TRAINER_OPTIONS`, e.g.
            ``{limit_train_batches: 0.25}``: a quarter of each epoch's batches, a fresh random
            subset every epoch (retain subsampling, or steps rather than whole epochs).
    """

    method: str
    max_epochs: int = 5
    init_args: dict[str, Any] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    _: KW_ONLY  # the protocol fields below are named, never positional
    original: str = DENSE
    reference: Optional[str] = None
    shuffle_seed: Optional[int] = None
    trainer: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineSpec:
    """How a sparse original is made (an entry of ``originals:``), from the compare model.

    * ``pipeline: omp`` — "prune first, then unlearn" (Jia et al., NeurIPS 2023; OPTML
      Unlearn-Sparse ``main_imp.py``): the dense original (``original:``) is pruned by one-shot
      magnitude to ``amount`` (global over ``parameters``; the reference prunes conv weights only,
      pass their regex), the survivors are rewound to the dense original's weights after
      ``rewind_epoch`` epochs of its training (0: its initialisation; the reference uses 8 of
      182) and the sparse network is trained again on all the data with the mask fixed, for
      ``max_epochs`` with the optimiser below. Its Retrain trains fresh weights under the same
      mask on D_r.
    * ``pipeline: lottery`` — the lottery-ticket pipeline the un-pruning paper builds its sparse
      models with (Xiao et al., arXiv 2507.18725; NKUShaw/SparseModels ->
      rahulvigneswaran/Lottery-Ticket-Hypothesis-in-Pytorch): from the initialisation drawn with
      ``init_seed`` (:func:`~lightning_unlearn.models.reinitialise`), ``rounds`` rounds of train,
      prune ``p = 1 - (1 - amount) ** (1 / rounds)`` of each layer's remaining weights by
      magnitude (``scope: layer``), rewind the survivors to the initialisation, then train the
      final ticket; ``max_epochs`` in all (``max_epochs / (rounds + 1)`` per segment), on all
      the data. Its Retrain is the same pipeline from the same initialisation on D_r (the
      reference topology). Use a constant learning rate (``lr_scheduler: null``).

    Args:
        pipeline: ``"omp"`` or ``"lottery"``.
        amount: final sparsity, in (0, 1).
        parameters: regex(es) of the weights pruned (default: conv and linear weights).
        scope: ``"global"`` or ``"layer"`` (default: ``global`` for omp, ``layer`` for lottery).
        structured: prune whole conv filters / linear rows (by L2 norm).
        rewind_epoch: omp: the dense original's epoch to rewind to (0 = its initialisation).
        rounds: lottery: pruning rounds.
        init_seed: lottery: seed of the initialisation (default: the compare seed).
        max_epochs: training epochs of the pipeline (default: ``original.max_epochs``).
        lr: SGD learning rate (default: ``original.lr``).
        momentum: SGD momentum (default: ``original.momentum``).
        weight_decay: SGD weight decay (default: ``original.weight_decay``).
        lr_scheduler: ``"original"`` (the original's), ``None`` (constant) or ``"cosine"``.
    """

    pipeline: Literal["omp", "lottery"]
    amount: float = 0.95
    parameters: Optional[Union[str, list[str]]] = None
    scope: Optional[Literal["global", "layer"]] = None
    structured: bool = False
    rewind_epoch: int = 0
    rounds: int = 1
    init_seed: Optional[int] = None
    max_epochs: Optional[int] = None
    lr: Optional[float] = None
    momentum: Optional[float] = None
    weight_decay: Optional[float] = None
    lr_scheduler: Optional[str] = "original"


#: The Trainer settings a row may set (``MethodSpec.trainer``).
ROW_TRAINER_OPTIONS = ("limit_train_batches", "max_steps")


# ---------------------------------------------------------------------------------- parsing
#: The folder of the packaged presets (``lightning_unlearn/configs``: ``quickstart.yaml``, ``digits/*.yaml``).
PRESETS = Path(__file__).resolve().parents[1] / "configs"


def presets() -> list[str]:
    """The names of the packaged presets, e.g. ``["digits/bad_teacher", ..., "quickstart"]``."""
    return sorted(p.relative_to(PRESETS).with_suffix("").as_posix() for p in PRESETS.rglob("*.yaml"))


def resolve_preset(value: Union[str, os.PathLike]) -> str:
    """A config argument as a path: an existing file is kept; otherwise a preset name
    (``quickstart``, ``digits/random_label``, with or without ``.yaml`` and a leading ``configs/``,
    as the README writes them) gives the packaged file, so the same command works from a clone and
    from an installed wheel. Anything else is returned unchanged (the parser then reports it).

    Example::

        >>> resolve_preset("quickstart").endswith("lightning_unlearn/configs/quickstart.yaml")
        True
    """
    text = os.fspath(value)
    if os.path.exists(text) or text.lstrip().startswith(("{", "[")):
        return text
    name = text.replace(os.sep, "/")
    for prefix in ("lightning_unlearn/configs/", "configs/", "./configs/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    for candidate in (PRESETS / name, PRESETS / f"{name}.yaml"):
        if candidate.is_file() and PRESETS in candidate.resolve().parents:
            return str(candidate)
    return text


def resolve_config_args(args: list[str]) -> list[str]:
    """``args`` with the value of every ``--config``/``-c`` option passed through :func:`resolve_preset`."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = resolve_preset(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve_preset(arg[len("--config=") :])
    return out


def build_parser(exit_on_error: bool = True) -> Any:
    """The jsonargparse parser of a compare config (``omegaconf+`` mode: interpolation is resolved
    on the final config, so ``--original.max_epochs=5`` also reaches ``${original.max_epochs}``).

    Args:
        exit_on_error: print usage and exit on a bad config (the command line); ``False`` raises
            instead (library use).
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="lightning-unlearn compare",
        parser_mode="omegaconf+",
        exit_on_error=exit_on_error,
        description=(
            "Train the original model, unlearn it with several methods, retrain without the forget set"
            " and print UA / RA / TA / MIA-efficacy / Avg. Gap to Retrain / run time."
        ),
    )
    parser.add_argument(
        "--config",
        action=ActionConfigFile,
        help="A compare YAML or a packaged preset name, e.g. quickstart or digits/compare_classwise.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Global seed (set again before every method).")
    parser.add_subclass_arguments(UnlearningDataModule, "data", required=True, help="The data and the forget request.")
    parser.add_subclass_arguments(nn.Module, "model", required=True, help="The architecture, returning logits.")
    parser.add_argument("--original", type=OriginalSpec, default=OriginalSpec(), help="Training of the original.")
    parser.add_argument(
        "--originals",
        type=dict[str, dict[str, Any]],
        default={},
        help="More originals by name, each made by a pipeline (omp or lottery; see PipelineSpec).",
    )
    # Plain mappings (checked by check_methods): a dataclass with an `init_args` field would be
    # read by jsonargparse as a subclass specification.
    parser.add_argument(
        "--methods",
        type=dict[str, dict[str, Any]],
        required=True,
        help="Ordered mapping: row name -> {method, max_epochs, init_args}; must include retrain.",
    )
    parser.add_argument("--accelerator", type=str, default="auto", help="Lightning accelerator.")
    parser.add_argument(
        "--precision",
        type=Optional[str],
        default=None,
        help="Lightning precision of every fit, e.g. bf16-mixed (evaluation runs in float32).",
    )
    parser.add_argument("--mia_backend", type=Literal["torch", "sklearn"], default="torch", help="MIA attack backend.")
    parser.add_argument("--output", type=Optional[str], default=None, help="Where to write the JSON results.")
    parser.add_argument(
        "--logger",
        type=Optional[Literal["wandb", "none"]],
        default=None,
        help="wandb: one W&B run per row (group: the comparison, job_type: the row).",
    )
    parser.add_argument(
        "--project", type=Optional[str], default=None, help="W&B project (default: $WANDB_PROJECT, else lightning-unlearn)."
    )
    parser.add_argument(
        "--group", type=Optional[str], default=None, help="W&B group of the rows (default: compare-<date>-<time>)."
    )
    return parser


def parse_config(config: Config, instantiate: bool = True) -> Any:
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
                cfg = parser.parse_args(["--config", resolve_preset(config)])
        except ArgumentError as exc:
            raise ValueError(f"Invalid compare config {where}: {exc}") from exc
    if not instantiate:
        return cfg
    import lightning as L

    L.seed_everything(int(cfg.seed), verbose=False)
    return parser.instantiate_classes(cfg)


# ---------------------------------------------------------------------------------- checks
def _spec(value: Any, cls: type, where: str, example: str = "{method: finetune, max_epochs: 5, init_args: {lr: 0.01}}") -> Any:
    if isinstance(value, cls):
        return value
    if is_dataclass(value) and not isinstance(value, type):
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
        raise ValueError(f"`{where}` lacks {missing}: e.g. {example}.")
    return cls(**dict(value))


def _accepted(cls: type) -> list[str]:
    from lightning_unlearn import registry

    return list(registry.init_parameters(cls))


def check_methods(methods: Mapping[str, Any]) -> dict[str, MethodSpec]:
    """Validates the ``methods`` mapping before anything is trained.

    Returns:
        The mapping as :class:`MethodSpec` objects, in config order.

    Raises:
        ValueError: no method, no Retrain row, an unknown registry name, a ``max_epochs`` that is
            not an integer >= 1, or an init argument the method does not take (or sets
            ``model``/``weights``, which compare provides).
    """
    specs = {str(name): _spec(spec, MethodSpec, f"methods.{name}") for name, spec in (methods or {}).items()}
    if not specs:
        raise ValueError("`methods` is empty: list at least `retrain: {method: retrain, max_epochs: ...}`.")
    known = [e.name for e in registry.entries("method")]
    for name, spec in specs.items():
        if spec.method not in known:
            raise ValueError(f"methods.{name}.method: unknown method {spec.method!r}. Registered methods: {known}.")
        if not isinstance(spec.init_args, Mapping):
            raise ValueError(f"methods.{name}.init_args must be a mapping of the method's arguments, got {spec.init_args!r}.")
        spec.max_epochs = check_int(
            spec.max_epochs,
            f"methods.{name}.max_epochs",
            minimum=1,
            hint="set the row's epochs of unlearning (of training, for Retrain), e.g. `max_epochs: 5`.",
        )
        cls = registry.get(spec.method).cls
        accepted = _accepted(cls)
        for arg in spec.init_args:
            if arg in ("model", "weights"):
                raise ValueError(f"methods.{name}.init_args.{arg}: compare passes the original network itself; remove `{arg}`.")
            if arg not in accepted:
                raise ValueError(
                    f"methods.{name}.init_args.{arg}: {cls.__name__} takes no argument"
                    f" {arg!r}; it takes {[a for a in accepted if a not in ('model', 'weights')]}."
                )
        _check_callbacks(name, spec.callbacks)
        if not isinstance(spec.original, str) or not spec.original:
            raise ValueError(
                f"methods.{name}.original must be the name of an original ('{DENSE}' or one in `originals`), got {spec.original!r}."
            )
        if spec.shuffle_seed is not None:
            spec.shuffle_seed = check_int(
                spec.shuffle_seed, f"methods.{name}.shuffle_seed", hint="the seed of this row's data order."
            )
        _check_trainer(name, spec.trainer)
    if not any(spec.method == REFERENCE for spec in specs.values()):
        raise ValueError(
            "`methods` has no Retrain row: add `retrain: {method: retrain, max_epochs: ...}`; it is the reference of every gap."
        )
    return specs


def check_originals(originals: Mapping[str, Any], specs: Mapping[str, MethodSpec]) -> dict[str, PipelineSpec]:
    """Validates ``originals`` and the rows' ``original``/``reference`` fields before anything is trained.

    Returns:
        The pipelines by name, as :class:`PipelineSpec` objects.

    Raises:
        ValueError: an unknown pipeline or out-of-range field, a row naming an original or a
            reference that does not exist, a reference that is not a Retrain row of the same
            original, an original used by rows but without a Retrain row.
    """
    pipelines = {
        str(name): _spec(value, PipelineSpec, f"originals.{name}", "{pipeline: omp, amount: 0.95, rewind_epoch: 1}")
        for name, value in (originals or {}).items()
    }
    for name, p in pipelines.items():
        where = f"originals.{name}"
        if name == DENSE:
            raise ValueError(f"`{where}`: '{DENSE}' is the original that `original:` trains; give this one another name.")
        if p.pipeline not in PIPELINES:
            raise ValueError(f"`{where}.pipeline` must be one of {PIPELINES}, got {p.pipeline!r}.")
        p.amount = check_fraction(p.amount, f"{where}.amount", allow_one=False, hint="the final sparsity, e.g. 0.95.")
        if p.scope not in (None, "global", "layer"):
            raise ValueError(f"`{where}.scope` must be 'global' or 'layer', got {p.scope!r}.")
        p.scope = p.scope or ("layer" if p.pipeline == "lottery" else "global")
        p.structured = check_bool(p.structured, f"{where}.structured")
        p.rewind_epoch = check_int(
            p.rewind_epoch,
            f"{where}.rewind_epoch",
            minimum=0,
            hint="the dense original's epoch to rewind to (0: its initialisation).",
        )
        p.rounds = check_int(p.rounds, f"{where}.rounds", minimum=1, hint="the pruning rounds of the lottery pipeline.")
        if p.pipeline == "omp" and p.rounds != 1:
            raise ValueError(f"`{where}.rounds` applies to pipeline 'lottery' (omp prunes once): drop it.")
        if p.init_seed is not None:
            p.init_seed = check_int(p.init_seed, f"{where}.init_seed")
        if p.max_epochs is not None:
            p.max_epochs = check_int(p.max_epochs, f"{where}.max_epochs", minimum=1)
            if p.pipeline == "lottery" and p.max_epochs < p.rounds + 1:
                raise ValueError(
                    f"`{where}.max_epochs` must be >= rounds + 1 = {p.rounds + 1}: one training segment per round and the final one."
                )
        if p.lr_scheduler not in (None, "cosine", "original"):
            raise ValueError(f"`{where}.lr_scheduler` must be 'original', null or 'cosine', got {p.lr_scheduler!r}.")
    names = (DENSE, *pipelines)
    for row, spec in specs.items():
        if spec.original not in names:
            raise ValueError(f"methods.{row}.original: no original {spec.original!r}; the originals are {list(names)}.")
        if spec.reference is not None:
            ref = specs.get(spec.reference)
            if ref is None or ref.method != REFERENCE or ref.original != spec.original or ref.reference is not None:
                raise ValueError(
                    f"methods.{row}.reference: {spec.reference!r} must be a Retrain row of the same original"
                    f" ({spec.original!r}) that is itself a reference (no `reference` of its own)."
                )
    for original in {spec.original for spec in specs.values()}:
        if not any(spec.method == REFERENCE and spec.original == original for spec in specs.values()):
            raise ValueError(
                f"Rows unlearn original {original!r} but none retrains it: add"
                f" `retrain_{original}: {{method: retrain, original: {original}, max_epochs: ...}}`, its reference."
            )
    return pipelines


def _check_trainer(name: str, trainer: Any) -> None:
    if not isinstance(trainer, Mapping):
        raise ValueError(
            f"methods.{name}.trainer must be a mapping of Trainer settings, e.g. {{limit_train_batches: 0.25}}, got {trainer!r}."
        )
    unknown = sorted(set(trainer) - set(ROW_TRAINER_OPTIONS))
    if unknown:
        raise ValueError(f"methods.{name}.trainer: {unknown} cannot be set per row; allowed: {list(ROW_TRAINER_OPTIONS)}.")


def _check_callbacks(name: str, callbacks: Any) -> None:
    known = [e.name for e in registry.entries("callback") if e.name != "evaluation"]
    if not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"methods.{name}.callbacks must be a list of {{callback: name, init_args: {{...}}}}, got {callbacks!r}.")
    for i, item in enumerate(callbacks):
        where = f"methods.{name}.callbacks[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"callback", "init_args"} or "callback" not in item:
            raise ValueError(f"{where} must be {{callback: <name>, init_args: {{...}}}}, got {item!r}.")
        if item["callback"] not in known:
            raise ValueError(f"{where}.callback: unknown callback {item['callback']!r}. Registered callbacks: {known}.")
        cls = registry.get(item["callback"]).cls
        accepted = _accepted(cls)
        for arg in item.get("init_args") or {}:
            if arg not in accepted:
                raise ValueError(f"{where}.init_args.{arg}: {cls.__name__} takes {accepted}.")


def load_config(config: Config) -> tuple[Any, dict[str, MethodSpec], OriginalSpec]:
    """Checks a compare config, then builds its datamodule and network.

    Args:
        config: a YAML path, a mapping with the same keys, or a parsed jsonargparse Namespace.

    Returns:
        ``(cfg, specs, original_spec)``: the instantiated config (``cfg.data``, ``cfg.model``),
        the checked rows and the original's training.

    Raises:
        ValueError: for an invalid config, before anything is built or trained.
    """
    specs = check_methods(parse_config(config, instantiate=False).methods)  # fail before building anything
    cfg = parse_config(config)
    original_spec = _spec(cfg.original, OriginalSpec, "original")
    if not isinstance(cfg.data, UnlearningDataModule):
        raise ValueError(f"`data` must be an UnlearningDataModule (e.g. DigitsDataModule), got {type(cfg.data).__name__}.")
    if not isinstance(cfg.model, nn.Module):
        raise ValueError(f"`model` must be an nn.Module returning logits, got {type(cfg.model).__name__}.")
    original_spec.max_epochs = check_int(
        original_spec.max_epochs,
        "original.max_epochs",
        minimum=1,
        hint="set the original's training epochs, e.g. `original: {max_epochs: 20}`.",
    )
    return cfg, specs, original_spec
