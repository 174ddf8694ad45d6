import hashlib

import pytest
import torch

from lightning_unlearn.data import ForgetSpec, fingerprint

TARGETS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])


def test_indices_are_sorted_and_kept():
    assert ForgetSpec(indices=[7, 2, 5]).resolve(TARGETS).tolist() == [2, 5, 7]


def test_classes_select_every_example_of_the_class():
    assert ForgetSpec(classes=[2, 3]).resolve(TARGETS).tolist() == [2, 5, 8, 9]


def test_ratio_is_deterministic_per_seed_and_sized():
    targets = torch.arange(1000) % 10
    a = ForgetSpec(ratio=0.1, seed=1).resolve(targets)
    b = ForgetSpec(ratio=0.1, seed=1).resolve(targets)
    c = ForgetSpec(ratio=0.1, seed=2).resolve(targets)
    assert a.numel() == 100 and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, a.sort().values) and a.unique().numel() == 100


def test_fingerprint_is_sha256_of_sorted_int64_indices():
    idx = torch.tensor([5, 1, 3])
    expected = hashlib.sha256(b"".join(int(i).to_bytes(8, "little", signed=True) for i in (1, 3, 5))).hexdigest()
    assert fingerprint(idx) == expected


def test_to_dict_never_lists_indices():
    d = ForgetSpec(indices=list(range(50))).to_dict()
    assert d["indices"] == "<50 indices>" and d["seed"] == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(indices=[0, 10]), "out of range"),
        (dict(indices=[-1, 2]), "non-negative"),
        (dict(indices=[1, 1]), "duplicates"),
        (dict(classes=[7]), "do not occur"),
        (dict(indices=list(range(10))), "whole training set"),
        (dict(classes=[0, 1, 2, 3]), "whole training set"),
    ],
)
def test_bad_requests_against_data(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForgetSpec(**kwargs).resolve(TARGETS)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(indices=[1.5]), "integers"),
        (dict(indices=["a"]), "integers"),
        (dict(indices=torch.tensor([0.0, 1.0])), "integers"),
        (dict(ratio=0.0), r"\(0, 1\)"),
        (dict(ratio=1.0), r"\(0, 1\)"),
        (dict(ratio=-0.5), r"\(0, 1\)"),
        (dict(), "exactly one"),
        (dict(indices=[1], classes=[1]), "exactly one"),
    ],
)
def test_bad_requests_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForgetSpec(**kwargs)


def test_empty_forget_set():
    with pytest.raises(ValueError, match="empty"):
        ForgetSpec(indices=[]).resolve(TARGETS)
    with pytest.raises(ValueError, match="empty"):
        ForgetSpec(ratio=0.01).resolve(TARGETS)  # rounds to zero examples
