"""The analytic head's memory and its exact recursive removal (no trainer)."""

import pytest
import torch

from lightning_unlearn.functional import analytic_memory, forget_rows, learn_rows, least_squares_head


def data(n=400, d=12, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(c, (n,), generator=g)


@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_removal_equals_the_least_squares_refit_after_a_chain(chunk_size):
    x, y = data()
    memory = analytic_memory(x, y, 5, gamma=0.5)
    keep = torch.ones(len(y), dtype=torch.bool)
    for request in (torch.arange(0, 40), torch.arange(100, 103), (y == 2).nonzero().flatten()):
        request = request[keep[request]]
        memory = forget_rows(memory, x[request], y[request], chunk_size)
        keep[request] = False
        torch.testing.assert_close(memory.weight, least_squares_head(x[keep], y[keep], 5, gamma=0.5), rtol=0, atol=1e-10)
        assert memory.count == int(keep.sum())
    weight, bias = memory.head()
    assert weight.shape == (5, 12) and bias.shape == (5,)
    assert memory.weight[:, 2].abs().max() < 1e-12  # a class with no example left: its column is 0


def test_learning_and_forgetting_are_inverse_and_the_memory_keeps_no_data():
    x, y = data()
    memory = analytic_memory(x[:300], y[:300], 5)
    grown = learn_rows(memory, x[300:], y[300:])
    torch.testing.assert_close(grown.weight, least_squares_head(x, y, 5), rtol=0, atol=1e-10)
    torch.testing.assert_close(forget_rows(grown, x[300:], y[300:]).weight, memory.weight, rtol=0, atol=1e-10)
    assert {k: tuple(v.shape) for k, v in memory.state().items() if torch.is_tensor(v)} == {"R": (13, 13), "Q": (13, 5)}


def test_bad_inputs():
    x, y = data(n=50)
    memory = analytic_memory(x, y, 5)
    with pytest.raises(ValueError, match="cannot remove 60 examples from a memory of 50"):
        forget_rows(memory, torch.cat([x, x[:10]]), torch.cat([y, y[:10]]))
    with pytest.raises(ValueError, match="features have 3 dimensions but the memory was built on 12"):
        forget_rows(memory, x[:2, :3], y[:2])
    with pytest.raises(ValueError, match="`gamma` must be a finite number > 0"):
        analytic_memory(x, y, 5, gamma=0.0)
