"""Checking a report: its schema and arithmetic, its status, the forget set it names and the
weights it describes (``lightning-unlearn verify-report``)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, TypeGuard, Union

import torch

from lightning_unlearn.data.spec import fingerprint
from lightning_unlearn.metrics.keys import GAP_METRICS, METRICS
from lightning_unlearn.models.weights import read_state_dict, weights_sha256
from lightning_unlearn.report.core import METRIC_BLOCKS, OPTIONAL_KEYS, REPORT_KEYS, SCHEMA_VERSION, STATUSES

__all__ = ["Check", "read_indices", "schema_problems", "verify_report"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
RECIPE_KEYS = ("method", "optimizers", "lr_schedulers", "callbacks", "trainer", "data", "model", "config")


@dataclass(frozen=True)
class Check:
    """One verdict of :func:`verify_report`."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``PASS name: detail`` or ``FAIL name: detail``."""
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def verify_report(
    path: Union[str, Path], forget_indices: Optional[Union[str, Path]] = None, checkpoint: Optional[Union[str, Path]] = None
) -> list[Check]:
    """Verifies a report.

    Checks, in order: ``schema`` (schema version, every field present and well-typed, the recipe
    agreeing with the forget summary), ``arithmetic`` (UA = 1 - forget accuracy, gaps = after -
    reference, Avg. Gap = their mean absolute value), ``status`` (the run completed), then, when
    given, ``fingerprint`` (the SHA-256 of the sorted ``forget_indices`` equals the report's
    and their number its count) and ``weights`` (the SHA-256 of the checkpoint's network weights
    equals ``recipe.model.sha256_after``).

    Args:
        path: the report.
        forget_indices: a file of the forget-set positions: JSON (a list, or ``{"indices": [...]}``),
            ``.npy``, ``.pt``/``.pth`` (a tensor or list, read with ``weights_only=True``) or text
            (integers separated by spaces, commas or newlines).
        checkpoint: the unlearned model: a Lightning checkpoint or a ``state_dict`` file.

    Returns:
        One :class:`Check` per verdict; the report is verified when every ``ok`` is true.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        return [Check("schema", False, f"cannot read {str(path)!r}: {err}")]
    try:
        report = json.loads(text)
    except json.JSONDecodeError as err:
        return [Check("schema", False, f"{str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})")]
    problems = schema_problems(report)
    checks = [
        Check(
            "schema",
            not problems,
            "; ".join(problems[:6]) if problems else f"schema_version {SCHEMA_VERSION}, every field present and well-typed",
        )
    ]
    if not problems:
        checks.append(_arithmetic(report))
        checks.append(_status(report))
    if forget_indices is not None:
        checks.append(_fingerprint(report if not problems else None, forget_indices))
    if checkpoint is not None:
        checks.append(_weights(report if not problems else None, checkpoint))
    return checks


# ---------------------------------------------------------------------------------- the schema
def _is_number(value: Any) -> TypeGuard[Union[int, float]]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def schema_problems(report: Any) -> list[str]:
    """Everything that keeps ``report`` from being a well-formed schema-2 report (empty: none)."""
    if not isinstance(report, dict):
        return [f"the file holds a JSON {type(report).__name__}, not a report"]
    version = report.get("schema_version")
    if version != SCHEMA_VERSION:
        return [f"schema_version is {version!r}, this verifier checks version {SCHEMA_VERSION}"]
    problems = [f"missing key {k!r}" for k in REPORT_KEYS if k not in report]
    problems += [f"unexpected key {k!r}" for k in report if k not in REPORT_KEYS + OPTIONAL_KEYS]
    if problems:
        return problems
    status = report["status"]
    completed = status == "completed"
    if status not in STATUSES:
        problems.append(f"status {status!r} is not one of {STATUSES}")
    if not isinstance(report["method"], str) or not report["method"]:
        problems.append("method is not a class name")
    if not isinstance(report["hyperparameters"], dict):
        problems.append("hyperparameters is not an object")
    problems += _forget_problems(report["forget"])
    problems += _metrics_problems(report["metrics"], completed)
    if not _is_number(report["runtime_s"]) or report["runtime_s"] < 0:
        problems.append("runtime_s is not a non-negative number")
    if report["seed"] is not None and not _is_int(report["seed"]):
        problems.append("seed is neither an integer nor null")
    failure = report["failure"]
    if completed and failure is not None:
        problems.append("a completed run has a failure")
    if not completed and (not isinstance(failure, dict) or not isinstance(failure.get("reason"), str)):
        problems.append(f"a {status} run lacks failure.reason")
    problems += _recipe_problems(report["recipe"], report["forget"], completed)
    if "audit" in report:
        problems += _audit_problems(report["audit"])
    if not isinstance(report["versions"], dict) or not all(isinstance(v, str) for v in report["versions"].values()):
        problems.append("versions is not an object of strings")
    try:
        if datetime.fromisoformat(str(report["created"])).tzinfo is None:
            problems.append("created has no time zone")
    except ValueError:
        problems.append("created is not an ISO 8601 time")
    return problems


def _forget_problems(forget: Any) -> list[str]:
    if not isinstance(forget, dict):
        return ["forget is not an object"]
    problems = []
    if not _is_int(forget.get("count")) or forget["count"] < 1:
        problems.append("forget.count is not a positive integer")
    if "retain_count" in forget and (not _is_int(forget["retain_count"]) or forget["retain_count"] < 1):
        problems.append("forget.retain_count is not a positive integer")
    if not isinstance(forget.get("fingerprint"), str) or not _HEX64.fullmatch(forget["fingerprint"]):
        problems.append("forget.fingerprint is not a SHA-256 (64 hex digits)")
    spec = forget.get("spec")
    if not isinstance(spec, dict) or set(spec) != {"indices", "classes", "ratio", "seed"}:
        problems.append("forget.spec does not hold indices, classes, ratio and seed")
    elif isinstance(spec["indices"], list):
        problems.append("forget.spec.indices lists the indices: a report never carries them")
    return problems


def _metrics_problems(metrics: Any, completed: bool) -> list[str]:
    if not isinstance(metrics, dict) or not set(METRIC_BLOCKS) <= set(metrics):
        return [f"metrics does not hold {METRIC_BLOCKS}"]
    # Sections callbacks add beside the four blocks (pruning's "topology", UnlearningHardness's "hardness").
    problems = [f"metrics.{k} is not an object" for k in metrics if k not in METRIC_BLOCKS and not isinstance(metrics[k], dict)]
    for block in ("before", "after", "reference"):
        values = metrics[block]
        if values is None:
            if block == "before" or (block == "after" and completed):
                problems.append(f"metrics.{block} is missing")
            continue
        if not isinstance(values, dict):
            problems.append(f"metrics.{block} is not an object")
            continue
        for key in METRICS:
            value = values.get(key)
            if value is None and not (completed and block != "reference"):
                continue
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                problems.append(f"metrics.{block}.{key} = {value!r} is not a fraction in [0, 1]")
    gap = metrics["gap"]
    if gap is not None and (not isinstance(gap, dict) or not all(v is None or _is_number(v) for v in gap.values())):
        problems.append("metrics.gap is not an object of numbers")
    if completed and metrics["reference"] is not None and gap is None:
        problems.append("metrics.gap is missing though a reference is given")
    return problems


def _recipe_problems(recipe: Any, forget: Any, completed: bool) -> list[str]:
    if not isinstance(recipe, dict):
        return ["recipe is not an object"]
    missing = [k for k in RECIPE_KEYS if k not in recipe]
    if missing:
        return [f"recipe lacks {missing}"]
    problems = []
    method = recipe["method"]
    if not isinstance(method, dict) or not isinstance(method.get("class"), str):
        problems.append("recipe.method.class is missing")
    if not isinstance(recipe["callbacks"], list):
        problems.append("recipe.callbacks is not a list")
    trainer = recipe["trainer"]
    if not isinstance(trainer, dict) or not _is_int(trainer.get("steps_run")) or not isinstance(trainer.get("precision"), str):
        problems.append("recipe.trainer lacks steps_run or precision")
    data = recipe["data"]
    if not isinstance(data, dict):
        problems.append("recipe.data is not an object")
    elif isinstance(forget, dict):
        if data.get("forget_count") != forget.get("count"):
            problems.append(f"recipe.data.forget_count {data.get('forget_count')!r} != forget.count {forget.get('count')!r}")
        if data.get("fingerprint") != forget.get("fingerprint"):
            problems.append("recipe.data.fingerprint differs from forget.fingerprint")
    if _lists_indices(recipe):
        problems.append("the recipe lists forget indices: a report never carries them")
    model = recipe["model"]
    if not isinstance(model, dict):
        return [*problems, "recipe.model is not an object"]
    for key in ("sha256_before", "sha256_after"):
        value = model.get(key)
        if value is None and not (key == "sha256_after" and completed):
            continue
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            problems.append(f"recipe.model.{key} is not a SHA-256")
    return problems


def _audit_problems(audit: Any) -> list[str]:
    if not isinstance(audit, dict):
        return ["audit is not an object"]
    problems = [f"audit lacks {k!r}" for k in ("audits", "after", "reference", "summary") if k not in audit]
    if problems:
        return problems
    if not isinstance(audit["summary"], list) or not all(
        isinstance(e, dict) and isinstance(e.get("quantity"), str) and "value" in e and isinstance(e.get("verdict"), str)
        for e in audit["summary"]
    ):
        problems.append("audit.summary is not a list of {quantity, value, verdict} entries")
    for block in ("before", "after", "reference", "reseeded"):
        value = audit.get(block)
        if value is not None and (
            not isinstance(value, dict) or not all(v is None or isinstance(v, str) or _is_number(v) for v in value.values())
        ):
            problems.append(f"audit.{block} is not an object of numbers")
    return problems


def _lists_indices(value: Any) -> bool:
    if isinstance(value, dict):
        return any((k == "indices" and isinstance(v, list)) or _lists_indices(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lists_indices(v) for v in value)
    return False


# ---------------------------------------------------------------------------------- the checks
def _arithmetic(report: dict[str, Any]) -> Check:
    metrics, wrong = report["metrics"], []
    for block in ("before", "after", "reference"):
        values = metrics[block] or {}
        if values.get("forget_acc") is not None and values.get("unlearning_accuracy") is not None:
            if abs(values["unlearning_accuracy"] - (1.0 - values["forget_acc"])) > 1e-9:
                wrong.append(f"metrics.{block}.unlearning_accuracy != 1 - forget_acc")
    after, reference, gap = metrics["after"], metrics["reference"], metrics["gap"]
    if after and reference and gap:
        for key in METRICS:
            if None not in (after.get(key), reference.get(key), gap.get(key)):
                if abs(gap[key] - (after[key] - reference[key])) > 1e-9:
                    wrong.append(f"metrics.gap.{key} != after - reference")
        parts = [abs(after[k] - reference[k]) for k in GAP_METRICS if after.get(k) is not None and reference.get(k) is not None]
        if gap.get("avg_gap") is not None and len(parts) == len(GAP_METRICS):
            if abs(gap["avg_gap"] - sum(parts) / len(parts)) > 1e-9:
                wrong.append("metrics.gap.avg_gap != mean |after - reference| over UA, RA, TA, MIA-efficacy")
    for entry in (report.get("audit") or {}).get("summary") or []:
        value, ref, difference = entry.get("value"), entry.get("reference"), entry.get("difference")
        if _is_number(value) and _is_number(ref) and _is_number(difference) and abs(difference - (value - ref)) > 1e-9:
            wrong.append(f"audit.summary {entry.get('quantity')}: difference != value - reference")
    if wrong:
        return Check("arithmetic", False, "; ".join(wrong))
    return Check("arithmetic", True, "UA = 1 - forget accuracy, gaps = after - reference, Avg. Gap = their mean |.|")


def _status(report: dict[str, Any]) -> Check:
    trainer = report["recipe"]["trainer"]
    if report["status"] == "completed":
        return Check("status", True, f"completed: {trainer['steps_run']} optimiser steps, {trainer.get('epochs_run')} epoch(s)")
    failure = report["failure"]
    where = ", ".join(f"{k} {failure[k]}" for k in ("step", "epoch") if failure.get(k) is not None)
    return Check("status", False, f"{report['status']}: {failure['reason']}" + (f" at {where}" if where else ""))


def read_indices(path: Union[str, Path]) -> torch.Tensor:
    """Reads forget-set positions from ``path`` (see :func:`verify_report` for the formats).

    Raises:
        ValueError: an unreadable file, or values that are not non-negative, distinct integers.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            import numpy as np

            values: Any = np.load(path, allow_pickle=False).tolist()
        elif suffix in (".pt", ".pth"):
            values = torch.load(path, map_location="cpu", weights_only=True)
            values = values.tolist() if isinstance(values, torch.Tensor) else values
        else:
            text = path.read_text()
            try:
                values = json.loads(text)
            except json.JSONDecodeError:
                values = [int(token) for token in re.split(r"[\s,]+", text.strip()) if token]
        if isinstance(values, dict):
            values = values.get("indices")
    except Exception as err:  # any format error ends in one message naming the file
        raise ValueError(f"--forget-indices {str(path)!r} cannot be read as a list of integers: {err}") from None
    if not isinstance(values, list) or not values or not all(_is_int(v) for v in values):
        raise ValueError(f"--forget-indices {str(path)!r} does not hold a non-empty list of integer positions.")
    if min(values) < 0 or len(set(values)) != len(values):
        raise ValueError(f"--forget-indices {str(path)!r} holds negative or repeated positions.")
    return torch.tensor(values, dtype=torch.long)


def _fingerprint(report: Optional[dict[str, Any]], path: Union[str, Path]) -> Check:
    try:
        indices = read_indices(path)
    except (ValueError, OSError) as err:
        return Check("fingerprint", False, str(err))
    digest = fingerprint(indices)
    if report is None:
        return Check("fingerprint", False, f"the {len(indices)} indices hash to {digest[:16]}…, but the report is malformed")
    expected, count = report["forget"]["fingerprint"], report["forget"]["count"]
    if digest != expected or len(indices) != count:
        return Check(
            "fingerprint",
            False,
            f"the {len(indices)} indices of {str(path)!r} hash to {digest[:16]}…; the report"
            f" names {count} indices hashing to {expected[:16]}…",
        )
    return Check("fingerprint", True, f"the {count} indices of {str(path)!r} hash to forget.fingerprint {digest[:16]}…")


def _weights(report: Optional[dict[str, Any]], path: Union[str, Path]) -> Check:
    try:
        digest = weights_sha256(read_state_dict(path, name="--checkpoint"))
    except (ValueError, FileNotFoundError) as err:
        return Check("weights", False, str(err))
    if report is None:
        return Check("weights", False, f"the checkpoint's weights hash to {digest[:16]}…, but the report is malformed")
    model = report["recipe"]["model"]
    if digest == model.get("sha256_after"):
        return Check(
            "weights", True, f"SHA-256 of the weights in {str(path)!r} equals recipe.model.sha256_after ({digest[:16]}…)"
        )
    if digest == model.get("sha256_before"):
        return Check(
            "weights", False, f"{str(path)!r} holds the ORIGINAL weights (recipe.model.sha256_before), not the unlearned ones"
        )
    return Check(
        "weights",
        False,
        f"SHA-256 of the weights in {str(path)!r} is {digest[:16]}…, recipe.model.sha256_after is"
        f" {str(model.get('sha256_after'))[:16]}…: not the model this report describes",
    )
