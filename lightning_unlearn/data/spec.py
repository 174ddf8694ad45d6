"""What to forget: :class:`ForgetSpec` and its resolution to training-set indices."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from lightning_unlearn.validation import check_fraction, check_int


@dataclass(frozen=True)
class ForgetSpec:
    """A deletion request: which training examples must be forgotten.

    Give exactly one of ``indices``, ``classes`` or ``ratio``.

    Args:
        indices: positions in the training set to forget (random or targeted deletion).
        classes: class labels whose every training example is forgotten (class-wise forgetting).
        ratio: a fraction in (0, 1) of the training set drawn uniformly at random
            (the "random 10 %" scenario of SalUn / l1-sparse is ``ratio=0.1``).
        seed: seed of the random draw for ``ratio``; the same seed gives the same forget set.

    Raises:
        ValueError: when none or several of ``indices``/``classes``/``ratio`` are given, or when
            ``ratio`` is not in (0, 1). Requests that depend on the data (out-of-range indices,
            absent classes, an empty or total forget set) are checked by :meth:`resolve`.

    Example::

        >>> import torch
        >>> ForgetSpec(classes=[1]).resolve(torch.tensor([0, 1, 1, 2]))
        tensor([1, 2])
    """

    indices: Optional[list[int]] = None
    classes: Optional[list[int]] = None
    ratio: Optional[float] = None
    seed: int = 0

    def __post_init__(self) -> None:
        given = [name for name in ("indices", "classes", "ratio") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"ForgetSpec takes exactly one of `indices`, `classes` or `ratio`, got {given or 'none'}:"
                " e.g. ForgetSpec(classes=[3]) or ForgetSpec(ratio=0.1, seed=0)."
            )
        if self.ratio is not None:
            object.__setattr__(
                self, "ratio", check_fraction(self.ratio, "ratio", allow_one=False, hint="pass e.g. ratio=0.1 for 10 %")
            )
        object.__setattr__(self, "seed", check_int(self.seed, "seed", hint="the seed of the random draw, e.g. 0"))
        # frozen dataclass: normalise list-likes (tuples, tensors from YAML/CLI) to lists of ints.
        for name in ("indices", "classes"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _as_int_list(value, name))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description of the request (for the unlearning report).

        A request by ``indices`` is summarised by its count: the report never carries raw data
        or the index list itself (the fingerprint identifies it).
        """
        out = asdict(self)
        if self.indices is not None:
            out["indices"] = f"<{len(self.indices)} indices>"
        return out

    def resolve(self, targets: Tensor) -> Tensor:
        """Resolves the request against the training labels.

        Args:
            targets: the training set's labels, shape ``(N,)``.

        Returns:
            The sorted forget indices (``torch.long``).

        Raises:
            ValueError: out-of-range, negative or duplicated indices; classes absent from the
                data; an empty forget set; a forget set equal to the whole training set.
        """
        n = int(targets.numel())
        if self.indices is not None:
            idx = torch.tensor(self.indices, dtype=torch.long)
            if idx.numel() and int(idx.min()) < 0:
                raise ValueError(f"`indices` must be non-negative positions in the training set, got {int(idx.min())}.")
            if idx.numel() and int(idx.max()) >= n:
                raise ValueError(
                    f"`indices` contains {int(idx.max())}, out of range for a training set of {n} examples:"
                    f" use positions 0..{n - 1}."
                )
            if torch.unique(idx).numel() != idx.numel():
                raise ValueError("`indices` contains duplicates: list each training example to forget once.")
            forget = idx.sort().values
        elif self.classes is not None:
            present = set(torch.unique(targets).tolist())
            absent = sorted(set(self.classes) - present)
            if absent:
                raise ValueError(f"`classes` {absent} do not occur in the training data (labels present: {sorted(present)}).")
            forget = torch.isin(targets, torch.tensor(self.classes, dtype=targets.dtype)).nonzero().flatten()
        else:
            if self.ratio is None:
                raise ValueError("ForgetSpec needs `classes` or `ratio`: both are None.")
            count = round(float(self.ratio) * n)
            generator = torch.Generator().manual_seed(self.seed)
            forget = torch.randperm(n, generator=generator)[:count].sort().values
        if forget.numel() == 0:
            raise ValueError(
                "The forget set is empty: pass at least one index, a class present in the data, or a larger `ratio`."
            )
        if forget.numel() == n:
            raise ValueError(
                "The forget set is the whole training set: nothing would remain to retain. Forget a subset"
                " (fewer indices or classes, or `ratio` < 1)."
            )
        return forget


def fingerprint(indices: Tensor) -> str:
    """SHA-256 of the sorted forget indices (as little-endian int64): identifies a forget set
    in a report without revealing data."""
    ordered = indices.detach().to("cpu", torch.int64).sort().values.contiguous()
    return hashlib.sha256(ordered.numpy().astype("<i8").tobytes()).hexdigest()


def _as_int_list(value: Any, name: str) -> list[int]:
    fix = f"pass the positions to forget, e.g. {name}=mask.nonzero().flatten().tolist() for a boolean mask"
    kind = getattr(getattr(value, "dtype", None), "kind", None)  # numpy arrays
    if (isinstance(value, Tensor) and value.dtype == torch.bool) or kind == "b":
        raise ValueError(f"`{name}` got a boolean array (a mask?), not positions: {fix}.")
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex():
            raise ValueError(
                f"`{name}` must hold integers, got a {value.dtype} tensor: convert with `.long()` if they are whole numbers."
            )
        return [int(v) for v in value.flatten().tolist()]
    if kind is not None and kind not in "iu":
        raise ValueError(
            f"`{name}` must hold integers, got an array of dtype {value.dtype}: convert with `.astype(int)` if they are whole numbers."
        )
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValueError(f"`{name}` must be a list of integers, got {value!r} ({type(value).__name__}).")
    out = []
    for v in value:
        if isinstance(v, bool) or getattr(getattr(v, "dtype", None), "kind", None) == "b":
            raise ValueError(f"`{name}` holds booleans ({v!r}), not positions: {fix}.")
        if not (isinstance(v, int) or (hasattr(v, "__index__") and not isinstance(v, float))):
            raise ValueError(f"`{name}` must hold integers, got {v!r} ({type(v).__name__}).")
        out.append(int(v))
    return out
