"""Fisher forgetting and influence unlearning: torch.func per-sample gradients equal a loop over
samples, the WoodFisher inverse-Hessian-vector product equals an explicit solve, both edits equal
hand computations on a tiny model, both forget a digits class, bad input fails early."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lightning_unlearn.functional.per_sample import per_sample_gradients
from lightning_unlearn.methods import FisherForgetting, InfluenceUnlearning
from lightning_unlearn.methods.fisher_forgetting import fisher_noise_
from lightning_unlearn.methods.influence_unlearning import woodfisher_ihvp
from tests.conftest import quiet_trainer, synthetic_dataset
from tests.methods.test_methods import accuracy
from tests.methods.test_ssd import tiny_data, tiny_model


def loop_gradients(model, x, y, loss=F.cross_entropy):
    """(N, P) per-sample gradients, one autograd call per sample."""
    params = list(model.parameters())
    rows = [
        torch.cat([g.flatten() for g in torch.autograd.grad(loss(model(xi[None]), yi[None]), params)]) for xi, yi in zip(x, y)
    ]
    return torch.stack(rows)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_per_sample_gradients_equal_a_loop_over_samples(chunk_size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5))
    model[1].running_mean.uniform_(-0.5, 0.5)  # non-trivial buffers, used in eval mode
    model.eval()
    x, y = torch.randn(6, 1, 4, 4), torch.randint(0, 5, (6,))
    grads = per_sample_gradients(model, F.cross_entropy, x, y, chunk_size)
    assert list(grads) == [name for name, _ in model.named_parameters()]
    vectorised = torch.cat([g.reshape(6, -1) for g in grads.values()], dim=1)
    torch.testing.assert_close(vectorised, loop_gradients(model, x, y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, p", [(7, 12), (20, 5)])
def test_woodfisher_ihvp_equals_an_explicit_solve(n, p):
    g = torch.Generator().manual_seed(n)
    grads, v = torch.randn(n, p, generator=g, dtype=torch.float64), torch.randn(p, generator=g, dtype=torch.float64)
    hessian = 0.3 * torch.eye(p, dtype=torch.float64) + grads.T @ grads / n
    torch.testing.assert_close(woodfisher_ihvp(grads, v, dampening=0.3), torch.linalg.solve(hessian, v))
    torch.testing.assert_close(woodfisher_ihvp(grads[:0], v, dampening=0.3), v / 0.3)


def split_tensors(dm, name):
    indices = dm.forget_indices if name == "forget" else dm.retain_indices
    x, y = dm.train_set.tensors
    return x[indices], y[indices]


def test_influence_edit_equals_the_explicit_newton_step():
    dm, model = tiny_data(), tiny_model()
    method = InfluenceUnlearning(model, alpha=0.7, num_samples=1000, dampening=0.5)  # N = all 75 retain samples
    quiet_trainer(max_epochs=1).fit(method, datamodule=dm)

    reference = tiny_model().double()
    g_f = loop_gradients(reference, *(t.double() if t.is_floating_point() else t for t in split_tensors(dm, "forget")))
    g_r = loop_gradients(reference, *(t.double() if t.is_floating_point() else t for t in split_tensors(dm, "retain")))
    n_f, n_r = len(g_f), len(g_r)
    v = g_f.sum(0) / (n_f + n_r) - g_r.sum(0) * n_f / ((n_f + n_r) * n_r)
    hessian = 0.5 * torch.eye(v.numel(), dtype=torch.float64) + g_r.T @ g_r / n_r
    expected = torch.cat([p.flatten() for p in reference.parameters()]) + 0.7 * torch.linalg.solve(hessian, v)
    edited = torch.cat([p.detach().flatten() for p in method.model.parameters()]).double()
    torch.testing.assert_close(edited, expected, rtol=1e-4, atol=1e-6)
    assert method.trainer.callback_metrics["edit/woodfisher_samples"] == n_r


def test_fisher_edit_equals_the_hand_computation():
    dm, model = tiny_data(), tiny_model()
    method = FisherForgetting(model, alpha=1e-3, seed=3)
    quiet_trainer(max_epochs=1).fit(method, datamodule=dm)

    # True diagonal Fisher of D_r by an explicit loop over samples and classes.
    reference = tiny_model()
    x, _ = split_tensors(dm, "retain")
    params = list(reference.parameters())
    fisher = [torch.zeros_like(p) for p in params]
    for xi in x:
        log_p = reference(xi[None]).log_softmax(1)[0]
        for c in range(4):
            grads = torch.autograd.grad(log_p[c], params, retain_graph=True)
            fisher = [f + log_p[c].exp().detach() * g * g for f, g in zip(fisher, grads)]
    fisher = [f / len(x) for f in fisher]
    with torch.no_grad():
        fisher_noise_(params, fisher, 1e-3, 4, [0], torch.Generator().manual_seed(3))
    for edited, expected in zip(method.model.parameters(), params):
        torch.testing.assert_close(edited, expected, rtol=1e-4, atol=1e-6)
    head_weight, head_bias = list(method.model.parameters())[-2:]
    assert head_weight[0].abs().max() < 0.2 and head_bias[0].abs() < 0.2  # forgotten class row reset to ~0
    assert not torch.equal(method.model[0].weight, tiny_model()[0].weight)  # noise everywhere else


def test_fisher_forgetting_runs_on_a_plain_retain_loader():
    method = FisherForgetting(tiny_model(), alpha=1e-3)
    quiet_trainer(max_epochs=2).fit(method, train_dataloaders=DataLoader(synthetic_dataset(40), batch_size=16))
    assert method.edited and method.trainer.current_epoch == 1
    assert not torch.equal(method.model[3].weight, tiny_model()[3].weight)


@pytest.mark.parametrize(
    "make, kwargs",
    [(lambda m: FisherForgetting(m, alpha=1e-6), {}), (lambda m: InfluenceUnlearning(m, alpha=15.0), {})],
    ids=["fisher", "influence"],
)
def test_forgets_a_digits_class_and_keeps_retain(original, digits_classwise, make, kwargs):
    method = make(original)
    quiet_trainer(max_epochs=1, **kwargs).fit(method, datamodule=digits_classwise)
    assert accuracy(method.model, digits_classwise.forget_dataloader()) < 0.1
    assert accuracy(method.model, digits_classwise.retain_dataloader()) > 0.9


@pytest.mark.parametrize(
    "cls, kwargs, name",
    [
        (FisherForgetting, dict(alpha=0.0), "alpha"),
        (FisherForgetting, dict(alpha=float("inf")), "alpha"),
        (FisherForgetting, dict(chunk_size=0), "chunk_size"),
        (InfluenceUnlearning, dict(alpha=-1.0), "alpha"),
        (InfluenceUnlearning, dict(dampening=0.0), "dampening"),
        (InfluenceUnlearning, dict(num_samples=0), "num_samples"),
        (InfluenceUnlearning, dict(chunk_size=True), "chunk_size"),
    ],
)
def test_bad_hyperparameters_are_rejected(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        cls(tiny_model(), **kwargs)


def test_influence_without_forget_data_is_an_error_before_any_change():
    method = InfluenceUnlearning(tiny_model())
    before = copy.deepcopy(method.model.state_dict())
    with pytest.raises(ValueError, match="UnlearningDataModule"):
        quiet_trainer(max_epochs=1).fit(method, train_dataloaders=DataLoader(synthetic_dataset(20), batch_size=4))
    assert all(torch.equal(before[k], v) for k, v in method.model.state_dict().items())
