"""Sequential deletion requests: a chain of :class:`ForgetSpec` resolved step by step.

Request ``k`` is resolved against the training set *as it stands at step k*, i.e. without the
examples earlier requests deleted, so the forget sets of a chain are disjoint, the deleted set
only grows, and the same chain on the same data always gives the same sets:

* ``classes``: every remaining example of those classes (a class fully deleted earlier is an
  error: nothing of it remains);
* ``ratio``: ``round(ratio * n_remaining)`` examples drawn uniformly from the remaining ones with
  the request's ``seed``;
* ``indices``: positions in the *original* training set; an index an earlier request already
  deleted is an error (it cannot be deleted twice).

Pure torch (layer 1, no Lightning): :func:`resolve_requests` is what
:class:`~lightning_unlearn.data.UnlearningDataModule` calls with ``requests=[...]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_unlearn.data.spec import ForgetSpec

__all__ = ["as_requests", "resolve_requests"]


def as_requests(requests: Any) -> tuple[ForgetSpec, ...]:
    """``requests`` as a tuple of :class:`ForgetSpec` (mappings of its fields are accepted, as YAML
    gives them).

    Raises:
        ValueError: not a non-empty list of ForgetSpecs / mappings.
    """
    if isinstance(requests, (str, bytes)) or not hasattr(requests, "__iter__"):
        raise ValueError(
            f"`requests` must be a list of ForgetSpec (or mappings of its fields), got {type(requests).__name__}:"
            " e.g. requests=[ForgetSpec(classes=[0]), ForgetSpec(classes=[1])]."
        )
    out = []
    for i, request in enumerate(requests):
        if isinstance(request, dict) or (hasattr(request, "keys") and hasattr(request, "__getitem__")):
            request = ForgetSpec(**dict(request))
        if not isinstance(request, ForgetSpec):
            raise ValueError(f"`requests[{i}]` must be a ForgetSpec or a mapping of its fields, got {type(request).__name__}.")
        out.append(request)
    if not out:
        raise ValueError("`requests` is empty: give at least one ForgetSpec.")
    return tuple(out)


def resolve_requests(requests: Sequence[ForgetSpec], targets: Tensor) -> list[Tensor]:
    """Resolves a chain of requests against the training labels, each against what remains.

    Args:
        requests: the chain, first request first.
        targets: the training set's labels, shape ``(N,)``.

    Returns:
        One sorted ``torch.long`` tensor of training-set positions per request; the tensors are
        pairwise disjoint.

    Raises:
        ValueError: a request that is invalid against the remaining data (absent or already
            deleted classes, an index deleted earlier, an empty forget set) or a chain that would
            delete the whole training set. The message names the request.

    Example::

        >>> import torch
        >>> labels = torch.tensor([0, 1, 1, 2, 2, 2])
        >>> [t.tolist() for t in resolve_requests([ForgetSpec(classes=[1]), ForgetSpec(indices=[3])], labels)]
        [[1, 2], [3]]
    """
    n = int(targets.numel())
    remaining = torch.ones(n, dtype=torch.bool)
    out: list[Tensor] = []
    for step, request in enumerate(requests):
        positions = remaining.nonzero().flatten()
        try:
            if request.indices is not None:
                forget = request.resolve(targets)  # range and duplicate checks on the original positions
                deleted = forget[~remaining[forget]]
                if deleted.numel():
                    raise ValueError(
                        f"`indices` {deleted[:5].tolist()}{'...' if deleted.numel() > 5 else ''} were already deleted by an"
                        " earlier request: list each training example in one request only."
                    )
                if forget.numel() == positions.numel():
                    raise ValueError("the chain would delete the whole training set: nothing would remain to retain.")
            else:
                if positions.numel() == 0:
                    raise ValueError("nothing remains to delete.")
                forget = positions[request.resolve(targets[positions])]
        except ValueError as exc:
            raise ValueError(f"requests[{step}] ({_describe(request)}) at step {step}: {exc}") from None
        remaining[forget] = False
        out.append(forget.sort().values)
    return out


def _describe(request: ForgetSpec) -> str:
    fields = request.to_dict()
    if request.ratio is None:
        fields.pop("seed")
    return ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
