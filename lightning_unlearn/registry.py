"""One registry of every method and callback: name -> class and what it needs.

Shared tests, ``lightning-unlearn compare`` and the README method table all read it, so a new
method is one file plus one :func:`register` decorator.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Optional, TypeVar

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Entry:
    """What the registry knows of a method or callback."""

    name: str
    cls: type
    kind: Literal["method", "callback"]
    paper: str
    cost: str
    inputs: tuple[str, ...] = ()
    retrain_free: bool = True
    label_free: bool = False
    #: needs one class label per example (a classifier's ``(N, C)`` logits): ``True``; works on any
    #: cross-entropy targets, token sequences of a causal LM included, or on no labels: ``False``;
    #: ``None``: not stated (a callback that reads no labels of its own).
    class_labels: Optional[bool] = None

    @property
    def retain_free(self) -> bool:
        """Needs no retained data."""
        return "retain" not in self.inputs


_REGISTRY: dict[str, Entry] = {}


def register(
    name: str,
    *,
    kind: Literal["method", "callback"],
    paper: str,
    cost: str,
    retrain_free: bool = True,
    label_free: bool = False,
    class_labels: Optional[bool] = None,
) -> Callable[[T], T]:
    """Class decorator adding a method or callback to the registry under ``name``.

    ``class_labels``: whether the entry needs one class label per example; by default ``False``
    for a label-free entry, ``True`` for a method, not stated (``None``) for a callback. Declare
    ``False`` for an entry shown to work on other targets (the tiny causal LM of
    ``tests/test_language_model.py``).
    """
    if class_labels is None:
        class_labels = False if label_free else (True if kind == "method" else None)

    def decorator(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"{name!r} is registered twice ({_REGISTRY[name].cls.__name__} and {cls.__name__}).")
        inputs = tuple(getattr(cls, "unlearning_inputs", ()) or ())
        _REGISTRY[name] = Entry(name, cls, kind, paper, cost, inputs, retrain_free, label_free, class_labels)
        return cls

    return decorator


def _populate() -> None:
    importlib.import_module("lightning_unlearn.methods")
    importlib.import_module("lightning_unlearn.callbacks")


def entries(kind: Literal["method", "callback", None] = None) -> list[Entry]:
    """All registered entries (of one kind), in registration order."""
    _populate()
    return [e for e in _REGISTRY.values() if kind is None or e.kind == kind]


def get(name: str) -> Entry:
    """The entry registered as ``name``."""
    _populate()
    if name not in _REGISTRY:
        raise KeyError(f"Unknown method or callback {name!r}: registered are {sorted(_REGISTRY)}.")
    return _REGISTRY[name]


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor arguments of ``cls`` by name, own first, then those its ``**kwargs``
    forward to the base classes (as LightningCLI resolves them for ``--help``/``--print_config``).
    Methods declare only their own arguments and forward the shared ones by keyword."""
    out: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        forwards = False
        for name, parameter in inspect.signature(init).parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD or parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                forwards = True
            elif name != "self":
                out.setdefault(name, parameter)
        if not forwards:
            break
    return out


def markdown_table() -> str:
    """The README's method table, rendered from the registry (a test keeps README in sync)."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = [
        "| name | class | kind | paper | data | retrain-free | label-free | needs class labels | cost per step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in sorted(entries(), key=lambda e: (e.kind != "method", e.name)):  # import order varies
        data = " + ".join(e.inputs) if e.inputs else "-"
        rows.append(
            f"| `{e.name}` | `{e.cls.__name__}` | {e.kind} | {e.paper} | {data} | {yes(e.retrain_free)} |"
            f" {yes(e.label_free)} | {'-' if e.class_labels is None else yes(e.class_labels)} | {e.cost} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    # Run as a script this file is `__main__`, a second module object: the classes register into
    # the imported `lightning_unlearn.registry`, so render that one's table.
    from lightning_unlearn import registry

    print(registry.markdown_table())
