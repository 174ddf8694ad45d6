"""The pruning core without a trainer: masks vs hand computations, SynFlow vs an independent loop,
the PruningRecipe, the torch.nn.utils.prune interop and the l1 schedule and subgradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lightning_unlearn.functional import (
    MaskedParameters,
    PruningRecipe,
    add_l1_subgradient,
    apply_pruning,
    canonical_name,
    existing_masks,
    l1_strength,
    prunable_weights,
    prune_reparametrisation,
    prune_to_density,
    pruning_scores,
    sync_prune_buffers,
    synflow_masks,
)
from lightning_unlearn.metrics.functional import sparsity
from tests.callbacks import user_module

T, F = True, False
ALPHA = 1e-4


def Tiny() -> nn.Module:
    return user_module.Tiny(hidden=8)


def hand_net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -6.0, 3.0], [0.5, 3.0, -4.0]]))  # |3| tied at flat 2 and 4
        net[2].weight.copy_(torch.tensor([[5.0, 8.0], [9.0, 7.0]]))
    return net


# ---------------------------------------------------------------------------------- masks by hand
def test_unstructured_global_and_layer_masks_by_hand():
    net = hand_net()
    masks = apply_pruning(net, amount=0.5, scope="global")  # keep 5 of 10: 9, 8, 7, 6, 5
    assert masks["0.weight"].tolist() == [[F, T, F], [F, F, F]]
    assert masks["2.weight"].tolist() == [[T, T], [T, T]]
    assert net[0].weight.tolist() == [[0.0, -6.0, 0.0], [0.0, 0.0, 0.0]]
    masks = apply_pruning(hand_net(), amount=0.5, scope="layer")  # 3 of 6: 6, 4, then the tied 3 at the lower index
    assert masks["0.weight"].tolist() == [[F, T, T], [F, F, T]]
    assert masks["2.weight"].tolist() == [[F, T], [T, F]]


def test_structured_prunes_whole_rows_by_l2_norm():
    # Row norms: layer 0: 6.78, 5.02; layer 2: 9.43, 11.40.
    net = hand_net()
    masks = apply_pruning(net, amount=0.5, structured=True, scope="global")
    assert masks["0.weight"].tolist() == [[F, F, F], [F, F, F]] and bool(masks["2.weight"].all())
    masks = apply_pruning(hand_net(), amount=0.5, structured=True, scope="layer")
    assert masks["0.weight"].tolist() == [[T, T, T], [F, F, F]]
    assert masks["2.weight"].tolist() == [[F, F], [T, T]]


def test_random_pruning_is_seeded_and_exact():
    a = apply_pruning(Tiny(), amount=0.75, method="random", seed=1)
    b = apply_pruning(Tiny(), amount=0.75, method="random", seed=1)
    c = apply_pruning(Tiny(), amount=0.75, method="random", seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    assert float(sparsity(a)) == 0.75


def test_synflow_matches_an_independent_implementation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    amount, iterations = 0.8, 4
    ours = synflow_masks(
        net,
        ["0.weight", "2.weight"],
        [torch.ones(7, 5, dtype=torch.bool), torch.ones(3, 7, dtype=torch.bool)],
        amount,
        [5],
        iterations=iterations,
    )
    # Oracle: a linearised float64 copy, pruned round by round on all weights together.
    lin = copy.deepcopy(net).double()
    with torch.no_grad():
        for p in lin.parameters():
            p.abs_()
    weights = [lin[0].weight, lin[2].weight]
    kept = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    original = [w.detach().clone() for w in weights]
    for k in range(1, iterations + 1):
        with torch.no_grad():
            for w, m, o in zip(weights, kept, original):
                w.copy_(o * m)
        lin.zero_grad()
        lin(torch.ones(1, 5, dtype=torch.float64)).sum().backward()
        scores = torch.cat([torch.where(m, (w.grad * w).abs(), -1.0).flatten() for w, m in zip(weights, kept)])
        keep = round((1 - amount) ** (k / iterations) * scores.numel())
        flat = torch.zeros_like(scores, dtype=torch.bool)
        flat[scores.argsort(descending=True)[:keep]] = True
        kept = [part.view_as(w) for part, w in zip(flat.split([w.numel() for w in weights]), weights)]
    assert all(torch.equal(a, b) for a, b in zip(ours, kept))
    assert net[0].weight.min() < 0  # the network itself was not linearised
    assert net.training  # and its mode is restored


def test_apply_pruning_synflow_needs_an_input_shape():
    with pytest.raises(ValueError, match="needs `input_shape`"):
        apply_pruning(hand_net(), amount=0.5, method="synflow")
    masks = apply_pruning(hand_net(), amount=0.5, method="synflow", input_shape=[3], iterations=3)
    assert sum(int(m.sum()) for m in masks.values()) == 5


# ---------------------------------------------------------------------------------- the recipe
def test_recipe_masks_are_the_masks_apply_pruning_imposes():
    for kwargs in (dict(), dict(scope="layer"), dict(structured=True), dict(method="random", seed=3)):
        recipe = PruningRecipe(amount=0.5, **kwargs)
        net = hand_net()
        weights = [net[0].weight.detach().clone(), net[2].weight.detach().clone()]
        masks = apply_pruning(net, amount=0.5, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(recipe.masks(weights), masks.values())), kwargs
        assert all(torch.equal(w, n.detach()) for w, n in zip(weights, [hand_net()[0].weight, hand_net()[2].weight]))


def test_recipe_is_the_reference_rule_on_dense_weights():
    """What un-pruning's dense reference used to compute inline: scores of the weights, pruned to 1 - amount."""
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(6, 4, generator=g), torch.randn(3, 6, generator=g)]
    kept = [t != 0 for t in w]
    for method, reduce in (("omp", "l2"), ("imp", "l2"), ("random", "sum")):
        for scope in ("global", "layer"):
            for structured in (False, True):
                recipe = PruningRecipe(0.7, method, structured, scope, seed=2)
                expected = prune_to_density(pruning_scores(w, method, 2), kept, 1.0 - 0.7, scope, structured, reduce)
                got = recipe.masks(w, kept)
                assert recipe.reduce == reduce
                assert all(torch.equal(a, b) for a, b in zip(got, expected)), (method, scope, structured)


def test_recipe_rounds_and_densities():
    recipe = PruningRecipe(amount=0.875, method="imp", rounds=3)
    assert [recipe.density_after(k) for k in (1, 2, 3)] == pytest.approx([0.5, 0.25, 0.125])
    assert recipe.density_after(3) == 1.0 - 0.875
    w = [torch.arange(1.0, 9.0)]
    first = recipe.masks(w, density=recipe.density_after(1))
    assert first[0].tolist() == [F, F, F, F, T, T, T, T]
    assert recipe.masks(w, first, recipe.density_after(2))[0].tolist() == [F, F, F, F, F, F, T, T]
    assert PruningRecipe(method="synflow").needs_network and not recipe.needs_network


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(amount=0.0), "`amount` must be a fraction in \\(0, 1\\], got 0.0"),
        (dict(amount=1.5), "`amount` must be a fraction"),
        (dict(method="snip"), "`method` must be one of \\('omp', 'imp', 'synflow', 'random'\\), got 'snip'"),
        (dict(scope="model"), "`scope` must be one of \\('global', 'layer'\\)"),
        (dict(rounds=0, method="imp"), "`rounds` must be an integer >= 1, got 0"),
        (dict(rounds=2), "applies to method='imp' only"),
        (dict(input_shape=[0, 3]), "`input_shape` must be an integer >= 1, got 0"),
        (dict(input_shape=[]), "`input_shape` must list positive sizes"),
        (dict(synflow_iterations=0), "`synflow_iterations` must be an integer >= 1"),
        (dict(seed=1.5), "`seed` must be an integer"),
    ],
)
def test_recipe_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruningRecipe(**kwargs)


def test_recipe_normalises_and_is_frozen():
    recipe = PruningRecipe(amount=1, structured=1, input_shape=[1, 8, 8])
    assert recipe.amount == 1.0 and isinstance(recipe.amount, float) and recipe.structured is True
    assert recipe.input_shape == (1, 8, 8)
    with pytest.raises(AttributeError):
        recipe.amount = 0.5
    with pytest.raises(ValueError, match="scores a network"):
        PruningRecipe(method="synflow", input_shape=[3]).masks([torch.ones(2, 3)])


# ---------------------------------------------------------------------------------- torch.nn.utils.prune interop
def test_torch_prune_interop():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    prune.l1_unstructured(net[3], "weight", amount=0.5)
    accept = prunable_weights(net)
    assert [n for n, p in net.named_parameters() if accept(n, p)] == ["0.weight", "3.weight_orig"]
    assert canonical_name("3.weight_orig") == "3.weight" and canonical_name("3.bias") == "3.bias"
    assert prune_reparametrisation(net, "3.weight_orig") is net[3].weight_mask
    assert prune_reparametrisation(net, "0.weight") is None
    named = [(n, p) for n, p in net.named_parameters() if accept(n, p)]
    before = existing_masks(net, named)
    assert bool(before[0].all()) and torch.equal(before[1], net[3].weight_mask.bool())
    masks = apply_pruning(net, amount=0.75)  # the torch-pruned entries stay pruned
    assert not bool((masks["3.weight_orig"] & ~before[1]).any())
    assert torch.equal(net[3].weight_mask.bool(), masks["3.weight_orig"])
    masked = MaskedParameters(["3.weight_orig"], [net[3].weight_orig], [torch.ones(3, 8, dtype=torch.bool)])
    sync_prune_buffers(net, masked)
    assert bool(net[3].weight_mask.bool().all())


# ---------------------------------------------------------------------------------- l1
@pytest.mark.parametrize(
    "schedule, expected",
    [  # E = 5 epochs, E0 = 1 final epoch without l1
        ("linear_decay", [1.0, 0.75, 0.5, 0.25, 0.0]),
        ("linear_growth", [0.0, 0.25, 0.5, 0.75, 0.0]),
        ("constant", [1.0, 1.0, 1.0, 1.0, 0.0]),
    ],
)
def test_l1_strength_per_epoch(schedule, expected):
    assert [l1_strength(ALPHA, schedule, e, 5, 1) for e in range(5)] == pytest.approx([ALPHA * v for v in expected])


def test_linear_decay_without_off_epochs_is_the_reference_formula():
    assert [l1_strength(1.0, "linear_decay", e, 4) for e in range(4)] == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        l1_strength(1.0, "cosine", 0, 4)


def test_add_l1_subgradient_adds_gamma_sign_theta_where_there_is_a_gradient():
    p, q = nn.Parameter(torch.tensor([2.0, -1.0, 0.0])), nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([0.5, 0.5, 0.5])
    add_l1_subgradient([p, q], 0.1)
    assert p.grad.tolist() == pytest.approx([0.6, 0.4, 0.5]) and q.grad is None
    add_l1_subgradient([p], 0.0)
    assert p.grad.tolist() == pytest.approx([0.6, 0.4, 0.5])
