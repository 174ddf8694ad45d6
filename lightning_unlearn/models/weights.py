"""Loading a user's weights safely (``weights_only=True``) into a network, and identifying weights
by their SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

__all__ = ["check_state_fits", "export_weights", "load_weights", "read_state_dict", "weights_sha256"]

_SAVE_HINT = "save it with `torch.save(net.state_dict(), path)` or use a Lightning checkpoint of a method/ImageClassifier"


def read_state_dict(path: Union[str, Path], name: str = "weights") -> dict[str, Tensor]:
    """Reads a network's ``state_dict`` from ``path`` with ``torch.load(..., weights_only=True)``.

    Accepts a plain ``state_dict`` file or a Lightning checkpoint of any module that holds the
    network as ``self.model`` (``ImageClassifier``, every unlearning method): its ``state_dict``
    entries under ``model.`` are returned without that prefix (a checkpoint of a module without
    ``model.`` entries is returned whole). Nothing is ever unpickled beyond tensors and containers.

    Args:
        path: the file.
        name: the argument the path came from (named in errors).

    Raises:
        FileNotFoundError: ``path`` does not exist (with how to produce it).
        ValueError: ``path`` is not a file ``torch.load(weights_only=True)`` can read (corrupt,
            truncated, or holding arbitrary objects), or does not hold a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}={str(path)!r} does not exist: train the original model first, e.g."
            " `lightning-unlearn fit --config configs/digits/original.yaml`."
        )
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as err:
        raise ValueError(
            f"{name}={str(path)!r} cannot be read as weights: torch.load(weights_only=True) refused it"
            f" ({_reason(err)}). The file is corrupt, truncated or holds more than tensors;"
            f" lightning-unlearn never unpickles arbitrary objects: {_SAVE_HINT}."
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(k, str) for k in state):
        raise ValueError(
            f"{name}={str(path)!r} holds a {type(state).__name__}, not a state_dict (a mapping of parameter names to"
            f" tensors): {_SAVE_HINT}."
        )
    if any(key.startswith("model.") for key in state):
        state = {key[len("model.") :]: value for key, value in state.items() if key.startswith("model.")}
    bad = next((key for key, value in state.items() if not isinstance(value, Tensor)), None)
    if bad is not None:
        raise ValueError(f"{name}={str(path)!r}: entry {bad!r} is a {type(state[bad]).__name__}, not a tensor: {_SAVE_HINT}.")
    return dict(state)


def _reason(err: BaseException) -> str:
    """The part of a ``torch.load`` error that says what was wrong with the file (torch's advice
    to retry with ``weights_only=False`` is left out: that would run whatever the file holds)."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text, flags=re.S)
    reason = found.group(1).strip() if found else (text.strip().splitlines()[0] if text.strip() else "")
    return f"{type(err).__name__}: {reason[:160]}" if reason else type(err).__name__


def check_state_fits(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Checks that ``state`` has exactly the keys and shapes of ``model.state_dict()``, without
    touching ``model``.

    Raises:
        ValueError: naming ``source`` and the first mismatched key (missing, unexpected or of
            another shape).
    """
    own = model.state_dict()
    fix = f"build the network with the architecture {source} was saved from"
    for key, value in own.items():
        if key not in state:
            raise ValueError(
                f"{source} do not fit {type(model).__name__}: it lacks {key!r}"
                f" ({len(own)} entries expected, {len(state)} found): {fix}."
            )
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{source} do not fit {type(model).__name__}: {key!r} has shape {tuple(state[key].shape)} in the file"
                f" but {tuple(value.shape)} in the network: {fix}."
            )
    unexpected = next((key for key in state if key not in own), None)
    if unexpected is not None:
        raise ValueError(f"{source} do not fit {type(model).__name__}: it has the unexpected entry {unexpected!r}: {fix}.")


def load_weights(model: nn.Module, path: Union[str, Path], name: str = "weights") -> nn.Module:
    """Loads weights into ``model``, strictly, with ``torch.load(..., weights_only=True)``.

    Every key and shape is checked before a single value is copied, so a file that does not fit
    leaves ``model`` exactly as it was. See :func:`read_state_dict` for the accepted files.

    Args:
        model: the network to load into (changed in place).
        path: a ``state_dict`` file or a Lightning checkpoint.
        name: the argument the path came from (named in errors).

    Raises:
        FileNotFoundError: when ``path`` does not exist (with how to produce it).
        ValueError: an unreadable file, or keys/shapes that do not match the network (the
            message names the file and the first mismatched key).
    """
    state = read_state_dict(path, name)
    check_state_fits(model, state, f"{name}={str(path)!r}")
    model.load_state_dict(state, strict=True)
    return model


def weights_sha256(weights: Union[nn.Module, Mapping[str, Tensor]]) -> str:
    """SHA-256 of a network's weights: over every ``state_dict`` entry in key order, its name,
    dtype, shape and raw bytes. Identical weights give the same digest on any device; one bit
    changed anywhere gives another. Compare the ``recipe.model.sha256_*`` of a report with a
    checkpoint's (``lightning-unlearn verify-report REPORT --checkpoint CKPT``).

    Example::

        >>> net = nn.Linear(2, 2)
        >>> weights_sha256(net) == weights_sha256(net.state_dict())
        True
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    digest = hashlib.sha256()
    for key in sorted(state):
        data = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{str(data.dtype).replace('torch.', '')}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export_weights(
    weights: Union[nn.Module, Mapping[str, Tensor]],
    path: Union[str, Path],
    report: Optional[Union[str, Path]] = None,
    source: Optional[str] = None,
) -> Path:
    """Writes a network's ``state_dict`` to ``path`` for ``net.load_state_dict(torch.load(path,
    weights_only=True))``, atomically (a temporary file in the same folder, then ``os.replace``),
    with a sidecar ``<path>.json``: the weights' SHA-256 (:func:`weights_sha256`), the report's
    path, SHA-256 and whether the report describes these weights (``recipe.model.sha256_after``),
    and the source checkpoint. Tensors are saved on the CPU, detached. Returns ``path``.

    Example::

        >>> import tempfile, os
        >>> net = nn.Linear(2, 2)
        >>> out = export_weights(net, os.path.join(tempfile.mkdtemp(), "net.pt"))
        >>> nn.Linear(2, 2).load_state_dict(torch.load(out, weights_only=True))
        <All keys matched successfully>

    Raises:
        ValueError: ``path`` is a folder, or ``report`` is not a readable JSON report.
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    state = {key: value.detach().cpu() for key, value in state.items()}
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"The export path {str(path)!r} is a folder: give a file name, e.g. {str(path / 'net.pt')!r}.")
    meta: dict[str, Any] = {"weights_sha256": weights_sha256(state), "source": source, "report": None}
    if report is not None:
        try:
            raw = Path(report).read_bytes()
            described = json.loads(raw).get("recipe", {}).get("model", {}).get("sha256_after")
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(f"report={str(report)!r} is not a readable JSON report ({err}).") from None
        meta.update(
            report=str(report), report_sha256=hashlib.sha256(raw).hexdigest(), report_matches=described == meta["weights_sha256"]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, write in (
        (path, lambda f: torch.save(state, f)),
        (Path(f"{path}.json"), lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode())),
    ):
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
    return path
