"""Loading a user's weights safely (``weights_only=True``) into a network."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn


def load_weights(model: nn.Module, path: Union[str, Path]) -> nn.Module:
    """Loads weights into ``model`` with ``torch.load(..., weights_only=True)``.

    Accepts a plain ``state_dict`` file or a Lightning checkpoint of any module that holds the
    network as ``self.model`` (``ImageClassifier``, every unlearning method): the ``model.``
    prefix is stripped.

    Raises:
        FileNotFoundError: when ``path`` does not exist (with how to produce it).
        ValueError: when the keys do not match the network.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={str(path)!r} does not exist: train the original model first, e.g."
            " `lightning-unlearn fit --config configs/digits/original.yaml`."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if any(key.startswith("model.") for key in state):
        state = {key[len("model."):]: value for key, value in state.items() if key.startswith("model.")}
    fix = "Build `model` with the architecture the weights were trained with."
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"weights={str(path)!r} do not fit {type(model).__name__}: {fix}\n{err}") from None
    if missing or unexpected:
        raise ValueError(
            f"weights={str(path)!r} do not fit {type(model).__name__}: missing {missing[:5]}, unexpected"
            f" {unexpected[:5]}. {fix}"
        )
    return model
