"""The unlearning report: one machine-readable JSON file per run, never any raw data.

Schema version 2 (see README, "The report"): the schema-1 keys (``method``, ``hyperparameters``,
``forget``, ``metrics``, ``runtime_s``, ``seed``, ``versions``, ``created``) plus
``schema_version``, ``status`` (``completed`` / ``diverged`` / ``interrupted``), ``failure``
(``None``, or what stopped the run and where) and ``recipe`` (everything needed to say what was
run: method, optimiser and scheduler in force, callbacks, trainer settings, data, model and the
SHA-256 of its weights before and after).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from lightning_unlearn.metrics.keys import METRICS
from lightning_unlearn.validation import check_readable_file

#: The version of the report layout this package writes (1: before ``schema_version`` existed).
SCHEMA_VERSION = 2
#: How a run ended.
STATUSES = ("completed", "diverged", "interrupted")
#: The keys of a report, in order.
REPORT_KEYS = (
    "schema_version",
    "status",
    "method",
    "hyperparameters",
    "forget",
    "metrics",
    "runtime_s",
    "seed",
    "failure",
    "recipe",
    "versions",
    "created",
)
#: Keys a report may add, in this order after ``metrics``: ``audit`` (with ``UnlearningEvaluation(audits=...)``).
OPTIONAL_KEYS = ("audit",)
#: The keys of a schema-1 report (still readable as a ``reference_report``).
LEGACY_KEYS = ("method", "hyperparameters", "forget", "metrics", "runtime_s", "seed", "versions", "created")
#: The blocks of ``metrics``.
METRIC_BLOCKS = ("before", "after", "reference", "gap")


def versions() -> dict[str, str]:
    """Versions of lightning-unlearn, torch and lightning."""
    import lightning
    import torch

    import lightning_unlearn

    return {"lightning-unlearn": lightning_unlearn.__version__, "torch": torch.__version__, "lightning": lightning.__version__}


def build_report(
    method: str,
    hyperparameters: Mapping[str, Any],
    forget: Mapping[str, Any],
    before: Mapping[str, Optional[float]],
    after: Optional[Mapping[str, Optional[float]]],
    reference: Optional[Mapping[str, Optional[float]]] = None,
    gap: Optional[Mapping[str, Optional[float]]] = None,
    runtime_s: float = 0.0,
    seed: Optional[int] = None,
    *,
    status: str = "completed",
    failure: Optional[Mapping[str, Any]] = None,
    recipe: Optional[Mapping[str, Any]] = None,
    audit: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Assembles the report.

    Args:
        method: the method's class name (``recipe.method`` has its registry name and import path).
        hyperparameters: the method's init arguments (made JSON-safe here; keys starting with
            ``_``, e.g. LightningCLI's ``_class_path``/``_instantiator``, are dropped).
        forget: :meth:`UnlearningDataModule.forget_summary` (count, retain_count, fingerprint, spec).
        before: metrics of the original model (fractions in [0, 1]).
        after: metrics of the unlearned model (``None`` or ``None`` values only when the run did
            not complete).
        reference: metrics of the reference (retrained) model, if any.
        gap: ``after - reference`` per metric plus ``avg_gap``, if a reference was given.
        runtime_s: wall time of the unlearning itself (evaluation excluded).
        seed: the global seed of the run.
        status: ``"completed"``, ``"diverged"`` or ``"interrupted"``.
        failure: for a run that did not complete, what stopped it (``reason``, ``step``, ``epoch``...).
        recipe: what was run (see :func:`lightning_unlearn.report.recipe.build_recipe`).
        audit: the audit section (see :mod:`lightning_unlearn.report.audit`), placed after
            ``metrics`` when given.

    Returns:
        A dict with exactly the keys :data:`REPORT_KEYS` (plus ``audit`` when given).

    Raises:
        ValueError: a metric outside [0, 1], a missing metric in a completed run, an unknown
            status, or a forget summary lacking count/fingerprint/spec.
    """
    if status not in STATUSES:
        raise ValueError(f"`status` must be one of {STATUSES}, got {status!r}.")
    for name, block in (("before", before), ("after", after), ("reference", reference)):
        for key in METRICS:
            value = None if block is None else block.get(key)
            if value is None:
                if block is not None and status == "completed" and name != "reference":
                    raise ValueError(f"metrics.{name}.{key} is missing, but a completed run measures every metric.")
                continue
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"metrics.{name}.{key} = {value} is not a fraction in [0, 1].")
    if after is None and status == "completed":
        raise ValueError("A completed run's report needs `after` metrics.")
    if not {"count", "fingerprint", "spec"} <= set(forget) <= {"count", "retain_count", "fingerprint", "spec"}:
        raise ValueError(
            f"`forget` must hold count, fingerprint, spec (and optionally retain_count), got {sorted(forget)}:"
            " pass UnlearningDataModule.forget_summary()."
        )
    report = {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "method": method,
        "hyperparameters": json_safe({k: v for k, v in dict(hyperparameters).items() if not str(k).startswith("_")}),
        "forget": json_safe(dict(forget)),
        "metrics": {
            "before": json_safe(dict(before)),
            "after": None if after is None else json_safe(dict(after)),
            "reference": None if reference is None else json_safe(dict(reference)),
            "gap": None if gap is None else json_safe(dict(gap)),
        },
    }
    if audit is not None:
        report["audit"] = json_safe(dict(audit))
    return {
        **report,
        "runtime_s": float(runtime_s),
        "seed": seed,
        "failure": None if failure is None else json_safe(dict(failure)),
        "recipe": None if recipe is None else json_safe(dict(recipe)),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: Union[str, Path], data: Any) -> Path:
    """Writes ``data`` as indented JSON, atomically: the text is serialised first, written to a
    temporary file in the same folder, flushed to disk and then moved over ``path`` with
    ``os.replace``. A fault at any point leaves ``path`` as it was (an earlier file intact) and
    no temporary file behind. Missing parent folders are created. Returns the path.

    Raises:
        ValueError: ``data`` holds NaN/inf or non-JSON values (nothing is written).
    """
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


def write_report(path: Union[str, Path], report: Mapping[str, Any]) -> Path:
    """Writes the report with :func:`write_json` (atomic); returns the path."""
    return write_json(path, dict(report))


def read_report(path: Union[str, Path], name: str = "report") -> dict[str, Any]:
    """Reads a report written by :func:`write_report` (schema 2, or a schema-1 report).

    Args:
        path: the report file.
        name: the argument the path came from (named in errors, e.g. ``"reference_report"``).

    Raises:
        ValueError: a missing or unreadable file, invalid JSON, or JSON that is not a report
            (each naming ``name``, the path and the fix).
    """
    path = check_readable_file(
        os.fspath(path) if isinstance(path, os.PathLike) else path,
        name,
        "pass the path of a report written by UnlearningEvaluation(report_path=...)",
    )
    try:
        report = json.loads(Path(path).read_text())
    except UnicodeDecodeError:
        raise ValueError(f"`{name}`={path!r} is not a text file: pass a JSON report written by UnlearningEvaluation.") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"`{name}`={path!r} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): pass a report"
            " written by UnlearningEvaluation(report_path=...)."
        ) from None
    if not isinstance(report, dict):
        raise ValueError(f"`{name}`={path!r} holds a JSON {type(report).__name__}, not an unlearning report.")
    version = report.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION or version < 1:
        raise ValueError(
            f"`{name}`={path!r} has schema_version {version!r}; this lightning-unlearn reads versions 1 to"
            f" {SCHEMA_VERSION}: upgrade lightning-unlearn or regenerate the report."
        )
    required = REPORT_KEYS if version >= 2 else LEGACY_KEYS
    missing = [k for k in required if k not in report]
    if missing:
        raise ValueError(f"`{name}`={path!r} is not an unlearning report: it lacks {missing}.")
    if not isinstance(report["metrics"], dict) or not isinstance(report["metrics"].get("after", {}), (dict, type(None))):
        raise ValueError(f"`{name}`={path!r} is not an unlearning report: `metrics` is malformed.")
    return report


def json_safe(value: Any) -> Any:
    """Numbers, strings, bools, None, lists and dicts pass; tensors become numbers or lists;
    anything else (callables, modules) becomes its qualified name. NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Enum):
        return json_safe(value.value)
    if type(value).__module__ == "torch" and type(value).__name__ in ("dtype", "device"):
        return str(value)
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    module = getattr(value, "__module__", None) or type(value).__module__
    return f"{module}.{name}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
