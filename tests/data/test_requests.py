"""Sequential requests: the split bookkeeping over a chain (disjoint, cumulative, deterministic)."""

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_unlearn.data import DigitsDataModule, ForgetSpec, UnlearningDataModule, resolve_requests

CHAIN = [ForgetSpec(classes=[3]), ForgetSpec(ratio=0.1, seed=1)]


@pytest.fixture(scope="module")
def digits():
    return DigitsDataModule(forget=ForgetSpec(classes=[0]))


def test_chain_is_disjoint_cumulative_and_deterministic(digits):
    remaining = digits.with_requests(CHAIN, 1).retain_indices[:3].tolist()
    chain = [*CHAIN, ForgetSpec(indices=remaining), ForgetSpec(classes=[5])]
    steps = [digits.with_requests(chain, k) for k in range(len(chain))]
    n = len(digits.forget_indices) + len(digits.retain_indices)
    deleted = set()
    for k, step in enumerate(steps):
        forget, retain = set(step.forget_indices.tolist()), set(step.retain_indices.tolist())
        earlier = [set(e.tolist()) for e in step.earlier_forget_indices]
        assert len(earlier) == k and forget and not forget & deleted  # new request: nothing deleted twice
        assert set().union(*earlier) == deleted  # earlier sets = everything deleted before
        assert retain == set(range(n)) - deleted - forget  # D_r = everything not yet deleted
        deleted |= forget
        assert step.chain_summary()["deleted_count"] == len(deleted)
        assert step.forget == chain[k] and step.step == k and step.num_requests == len(chain)
    targets = digits._targets
    assert all(int(targets[i]) == 3 for i in steps[0].forget_indices)
    assert len(steps[1].forget_indices) == round(0.1 * (n - len(steps[0].forget_indices)))  # drawn from what remains
    assert steps[2].forget_indices.tolist() == sorted(remaining)
    assert all(int(targets[i]) == 5 for i in steps[3].forget_indices)
    again = [digits.with_requests(chain, k) for k in range(len(chain))]
    for a, b in zip(steps, again):
        assert torch.equal(a.forget_indices, b.forget_indices) and a.fingerprint == b.fingerprint
    summary = steps[2].chain_summary()
    assert summary["fingerprints"] == [s.fingerprint for s in steps[:3]] and summary["step"] == 2
    assert "indices" not in str(summary)


def test_requests_argument_and_at_step(digits):
    dm = UnlearningDataModule(train=digits.train_set, test=digits.test_set, requests=CHAIN[:2], step=1)
    assert torch.equal(dm.forget_indices, digits.with_requests(CHAIN, 1).forget_indices)
    assert torch.equal(dm.at_step(0).forget_indices, digits.with_requests(CHAIN, 0).forget_indices)
    loaders = dm.earlier_dataloaders()
    assert len(loaders) == 1 and sum(len(y) for _, y in loaders[0]) == len(dm.earlier_forget_indices[0])
    assert len(dm.earlier_split()) == len(dm.earlier_forget_indices[0])
    mapping = UnlearningDataModule(train=digits.train_set, test=digits.test_set, requests=[{"classes": [1]}])
    assert mapping.forget == ForgetSpec(classes=[1]) and mapping.earlier_dataloaders() == []


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (
            [ForgetSpec(classes=[1]), ForgetSpec(classes=[1])],
            r"requests\[1\] \(classes=\[1\]\) at step 1: `classes` \[1\] do not occur",
        ),
        ([ForgetSpec(indices=[4, 5]), ForgetSpec(indices=[5, 6])], r"requests\[1\].*\[5\] were already deleted"),
        ([ForgetSpec(classes=[0, 1]), ForgetSpec(classes=[2])], "nothing would remain"),
    ],
)
def test_invalid_chains_fail_with_the_step(requests, message):
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    with pytest.raises(ValueError, match=message):
        resolve_requests(requests, y)


def test_argument_errors(digits):
    train = TensorDataset(torch.randn(10, 2), torch.arange(10) % 2)
    with pytest.raises(ValueError, match="not both"):
        UnlearningDataModule(train=train, test=train, forget=ForgetSpec(classes=[0]), requests=[ForgetSpec(classes=[1])])
    with pytest.raises(ValueError, match="`step` must be an integer >= 0 and <= 0"):
        UnlearningDataModule(train=train, test=train, requests=[ForgetSpec(classes=[1])], step=1)
    with pytest.raises(ValueError, match="serves one request"):
        digits.at_step(0)
