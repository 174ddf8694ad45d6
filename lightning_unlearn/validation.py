"""Argument checks shared by every public constructor.

Each check returns the value normalised (``int``/``float``) or raises a ``ValueError`` whose
message names the argument, shows the value it got and says what to pass instead. Pure Python:
every layer of the package may import it, and it imports nothing of the package.

Example::

    >>> check_int(3, "epochs", minimum=1)
    3
    >>> check_float(0.5, "threshold", minimum=0.0, maximum=1.0, open_minimum=True)
    0.5
    >>> check_int("2", "num_workers", minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: `num_workers` must be an integer >= 0, got '2' (str).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Optional

__all__ = [
    "check_bool",
    "check_choice",
    "check_float",
    "check_fraction",
    "check_int",
    "check_optional_path",
    "check_output_path",
    "check_readable_file",
    "check_str",
]


def _got(value: Any) -> str:
    return (
        f"{value!r} ({type(value).__name__})" if not isinstance(value, (int, float)) or isinstance(value, bool) else repr(value)
    )


def _fail(name: str, wanted: str, value: Any, hint: str) -> ValueError:
    return ValueError(f"`{name}` must be {wanted}, got {_got(value)}" + (f": {hint}" if hint else "."))


def check_int(value: Any, name: str, *, minimum: Optional[int] = None, maximum: Optional[int] = None, hint: str = "") -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]``; bools, floats and strings are refused
    (``batch_size=2.5`` or ``"2"`` is an error, never a silent truncation)."""
    bound = "" if minimum is None else f" >= {minimum}"
    bound += "" if maximum is None else f"{' and' if bound else ''} <= {maximum}"
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok and hasattr(value, "__index__") and not isinstance(value, bool) and not isinstance(value, float):
        try:  # numpy / torch integer scalars
            value, ok = int(value.__index__()), True
        except TypeError:
            ok = False
    if not ok or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(name, f"an integer{bound}", value, hint)
    return int(value)


def check_float(
    value: Any,
    name: str,
    *,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    open_minimum: bool = False,
    open_maximum: bool = False,
    hint: str = "",
) -> float:
    """``value`` as a finite ``float`` within the bounds (``open_*``: the bound itself excluded).
    NaN, infinities, bools and strings (``lr="0.1"``) are refused."""
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if open_minimum else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if open_maximum else '<='} {maximum:g}")
    wanted = "a finite number" + (" " + " and ".join(parts) if parts else "")
    if isinstance(value, bool):
        raise _fail(name, wanted, value, hint)
    if not isinstance(value, (int, float)):
        if hasattr(value, "__float__") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
            value = float(value)  # numpy / torch scalars
        else:
            raise _fail(name, wanted, value, hint)
    value = float(value)
    bad = not math.isfinite(value)
    if minimum is not None and (value <= minimum if open_minimum else value < minimum):
        bad = True
    if maximum is not None and (value >= maximum if open_maximum else value > maximum):
        bad = True
    if bad:
        raise _fail(name, wanted, value, hint)
    return value


def check_fraction(value: Any, name: str, *, allow_zero: bool = False, allow_one: bool = True, hint: str = "") -> float:
    """``value`` as a float in ``(0, 1]`` (``allow_zero``: from 0; ``allow_one=False``: below 1)."""
    low, high = "[" if allow_zero else "(", "]" if allow_one else ")"
    try:
        return check_float(value, name, minimum=0.0, maximum=1.0, open_minimum=not allow_zero, open_maximum=not allow_one)
    except ValueError:
        raise _fail(name, f"a fraction in {low}0, 1{high}", value, hint) from None


def check_choice(value: Any, name: str, choices: Sequence[Any], hint: str = "") -> Any:
    """``value`` if it is one of ``choices`` (``True`` never passes for ``1``, nor ``1`` for ``True``)."""
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        raise _fail(name, f"one of {tuple(choices)}", value, hint)
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is ``True`` or ``False`` (not ``1``, ``"yes"``, a tensor)."""
    if not isinstance(value, bool):
        raise _fail(name, "True or False", value, "")
    return value


def check_str(value: Any, name: str, hint: str = "") -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise _fail(name, "a non-empty string", value, hint)
    return value


def check_optional_path(value: Any, name: str, hint: str = "") -> Optional[str]:
    """``None`` or a non-empty path string (``os.PathLike`` accepted, returned as ``str``)."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise _fail(name, "None or a file path", value, hint)
    return value


def check_output_path(value: Any, name: str) -> str:
    """``value`` as the path of a file this package may write now: a non-empty path string whose
    target is not a folder, whose nearest existing parent is a folder (missing folders below it
    are created at write time) and writable.

    Raises:
        ValueError: naming the argument, the value and the fix.
    """
    path = check_optional_path(value, name, "the path of the file to write, e.g. 'artifacts/report.json'")
    if path is None:
        raise _fail(name, "a file path", value, "the path of the file to write, e.g. 'artifacts/report.json'")
    if os.path.isdir(path):
        raise ValueError(
            f"`{name}`={path!r} is a folder: pass a file path inside it, e.g. {os.path.join(path, 'report.json')!r}."
        )
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"`{name}`={path!r} lies under {parent!r}, which is a file, not a folder: choose a path in a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"`{name}`={path!r}: the folder {parent!r} is not writable: choose a path you can write to.")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"`{name}`={path!r} exists and is read-only: choose another path or make it writable.")
    return path


def check_readable_file(value: Any, name: str, hint: str = "") -> str:
    """``value`` as the path of an existing, readable file.

    Raises:
        ValueError: a non-path value, a missing path, a folder or an unreadable file.
    """
    path = check_optional_path(value, name, hint)
    if path is None:
        raise _fail(name, "a file path", value, hint)
    if not os.path.exists(path):
        raise ValueError(f"`{name}`={path!r} does not exist" + (f": {hint}" if hint else "."))
    if not os.path.isfile(path):
        raise ValueError(f"`{name}`={path!r} is not a file" + (f": {hint}" if hint else "."))
    if not os.access(path, os.R_OK):
        raise ValueError(f"`{name}`={path!r} is not readable: fix its permissions.")
    return path
