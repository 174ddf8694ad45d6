"""The unlearning report: one machine-readable JSON file per run, never any raw data."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from lightning_unlearn.metrics.keys import METRICS

REPORT_KEYS = ("method", "hyperparameters", "forget", "metrics", "runtime_s", "seed", "versions", "created")


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
    before: Mapping[str, float],
    after: Mapping[str, float],
    reference: Optional[Mapping[str, float]] = None,
    gap: Optional[Mapping[str, float]] = None,
    runtime_s: float = 0.0,
    seed: Optional[int] = None,
) -> dict[str, Any]:
    """Assembles the report.

    Args:
        method: the method's name (class name or registry name).
        hyperparameters: the method's init arguments (made JSON-safe here).
        forget: :meth:`UnlearningDataModule.forget_summary` (count, retain_count, fingerprint, spec).
        before: metrics of the original model (fractions in [0, 1]).
        after: metrics of the unlearned model.
        reference: metrics of the reference (retrained) model, if any.
        gap: ``after - reference`` per metric plus ``avg_gap``, if a reference was given.
        runtime_s: wall time of the unlearning itself (evaluation excluded).
        seed: the global seed of the run.

    Returns:
        A dict with exactly the keys :data:`REPORT_KEYS`.

    Raises:
        ValueError: a metric outside [0, 1], or a forget summary lacking count/fingerprint/spec.
    """
    for name, block in (("before", before), ("after", after), ("reference", reference)):
        for key in METRICS:
            if block is not None and key in block and not 0.0 <= float(block[key]) <= 1.0:
                raise ValueError(f"metrics.{name}.{key} = {block[key]} is not a fraction in [0, 1].")
    if not {"count", "fingerprint", "spec"} <= set(forget) <= {"count", "retain_count", "fingerprint", "spec"}:
        raise ValueError(
            f"`forget` must hold count, fingerprint, spec (and optionally retain_count), got {sorted(forget)}:"
            " pass UnlearningDataModule.forget_summary()."
        )
    return {
        "method": method,
        "hyperparameters": json_safe(dict(hyperparameters)),
        "forget": json_safe(dict(forget)),
        "metrics": {
            "before": json_safe(dict(before)),
            "after": json_safe(dict(after)),
            "reference": None if reference is None else json_safe(dict(reference)),
            "gap": None if gap is None else json_safe(dict(gap)),
        },
        "runtime_s": float(runtime_s),
        "seed": seed,
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_report(path: Union[str, Path], report: Mapping[str, Any]) -> Path:
    """Writes the report as indented JSON (creating parent folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


def read_report(path: Union[str, Path]) -> dict[str, Any]:
    """Reads a report written by :func:`write_report`."""
    report = json.loads(Path(path).read_text())
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"{path} is not an unlearning report: it lacks {missing}.")
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
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if hasattr(value, "item"):
        return json_safe(value.item())
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    module = getattr(value, "__module__", None) or type(value).__module__
    return f"{module}.{name}"


# ---------------------------------------------------------------------------------- report chains
def report_sha256(report: Mapping[str, Any]) -> str:
    """SHA-256 of a report's canonical JSON (sorted keys, no whitespace): the hash the next report
    of a chain of sequential requests carries as ``chain.previous_sha256``."""
    import hashlib

    canonical = json.dumps(json_safe(dict(report)), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain_report(
    report: Mapping[str, Any], previous: Optional[Mapping[str, Any]], chain: Optional[Mapping[str, Any]] = None
) -> dict[str, Any]:
    """``report`` with a ``chain`` block: ``previous_sha256`` (the :func:`report_sha256` of the
    previous step's report, ``None`` at the first step) plus ``chain`` (e.g.
    :meth:`UnlearningDataModule.chain_summary`: step, steps, fingerprints, deleted count).

    Each report's hash covers its own ``chain`` block, so changing any earlier report breaks every
    later link (:func:`verify_report_chain`)."""
    out = dict(report)
    out["chain"] = {**json_safe(dict(chain or {})), "previous_sha256": None if previous is None else report_sha256(previous)}
    return out


def verify_report_chain(reports: list[Mapping[str, Any]]) -> list[str]:
    """Checks that every report of a chain carries its predecessor's hash (the first carries
    ``None``) and that steps count up from 0; returns the reports' hashes.

    Raises:
        ValueError: a report without a ``chain`` block, a broken link or steps out of order (the
            message names the first bad step).
    """
    hashes, previous = [], None
    for i, report in enumerate(reports):
        chain = report.get("chain")
        if not isinstance(chain, Mapping):
            raise ValueError(f"report {i} has no `chain` block: it was not written as part of a chain (chain_report).")
        expected = None if previous is None else report_sha256(previous)
        if chain.get("previous_sha256") != expected:
            raise ValueError(
                f"report {i} (step {chain.get('step')}) carries previous_sha256 {chain.get('previous_sha256')!r}, but the"
                f" previous report hashes to {expected!r}: the chain was altered or reordered."
            )
        if "step" in chain and chain["step"] != i:
            raise ValueError(f"report {i} says step {chain['step']}: steps must count 0, 1, 2, ... in order.")
        hashes.append(report_sha256(report))
        previous = report
    return hashes
