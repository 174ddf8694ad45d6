"""Penultimate features of a classifier: which layer, and a hook that captures them during an
ordinary forward pass (so logits and features come from one pass).

The feature layer is named by a string:

* ``None`` (default): the known layer of the network's class (:data:`DEFAULT_FEATURE_LAYERS`:
  this package's ``SmallCNN`` and ``ResNet18``, torchvision's ``ResNet``), else the input of the
  network's last ``nn.Linear`` — the penultimate features of any "backbone + linear head"
  classifier (torchvision ResNets: the average-pooled features, as UUEF reads them);
* ``"<module name>"``: the output of that submodule (``model.get_submodule``), flattened;
* ``"<module name>:input"``: the input of that submodule, flattened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional

from torch import Tensor, nn

__all__ = ["DEFAULT_FEATURE_LAYERS", "feature_tap", "forward_with_features", "resolve_feature_layer"]

#: The penultimate layer of known networks, by class name (the input of their linear head).
DEFAULT_FEATURE_LAYERS: dict[str, str] = {
    "SmallCNN": "classifier:input",  # lightning_unlearn.models.SmallCNN: after pooling + flatten
    "ResNet18": "fc:input",  # lightning_unlearn.models.ResNet18: average-pooled features
    "ResNet": "fc:input",  # torchvision.models.ResNet (resnet18 ... resnet152): avgpool, flattened
}


def resolve_feature_layer(model: nn.Module, layer: Optional[str] = None) -> tuple[str, nn.Module, bool]:
    """``(name, module, read_input)``: the submodule whose output (or, with ``read_input``, input)
    is the feature vector of ``model`` (see the module docstring).

    Raises:
        ValueError: an unknown module name, or no ``nn.Linear`` to default to.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> resolve_feature_layer(net)[0], resolve_feature_layer(net)[2]
        ('3', True)
    """
    if layer is None:
        layer = DEFAULT_FEATURE_LAYERS.get(type(model).__name__)
    if layer is None:
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise ValueError(
                f"{type(model).__name__} has no nn.Linear head to read penultimate features from: pass `feature_layer=`"
                " the name of a submodule (its output is used) or '<name>:input'."
            )
        layer = f"{linears[-1]}:input"
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"`feature_layer` must be a submodule name (optionally with ':input'), got {layer!r}.")
    name, _, where = layer.partition(":")
    if where not in ("", "input", "output"):
        raise ValueError(f"`feature_layer`={layer!r}: the part after ':' must be 'input' or 'output'.")
    try:
        module = model.get_submodule(name) if name else model
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(
            f"`feature_layer`={layer!r}: {type(model).__name__} has no submodule {name!r} (it has {names}...)."
        ) from None
    return name, module, where == "input"


@contextmanager
def feature_tap(model: nn.Module, layer: Optional[str] = None) -> Iterator[Callable[[], Tensor]]:
    """Within the block, every forward of ``model`` also records its features; the yielded
    function returns those of the last forward as ``(batch, d)``. The hook is removed on exit.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with feature_tap(net) as features:
        ...     logits = net(torch.zeros(5, 4))
        >>> features().shape
        torch.Size([5, 3])
    """
    _, module, read_input = resolve_feature_layer(model, layer)
    store: dict[str, Tensor] = {}
    if read_input:
        handle = module.register_forward_pre_hook(lambda _m, args: store.__setitem__("x", args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _args, out: store.__setitem__("x", out))

    def read() -> Tensor:
        if "x" not in store:
            raise ValueError(
                f"the feature layer of {type(model).__name__} was not reached by the forward pass: check `feature_layer`."
            )
        return store["x"].flatten(1)

    try:
        yield read
    finally:
        handle.remove()


def forward_with_features(model: nn.Module, x: Tensor, layer: Optional[str] = None) -> tuple[Tensor, Tensor]:
    """``(logits, features)`` of one forward pass."""
    with feature_tap(model, layer) as read:
        logits = model(x)
        return logits, read()
