"""Un-pruning without a trainer: the topology algebra by hand, the score functions, the swap, and
apply_unpruning moving a sparse model's topology toward the retain-only reference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lightning_unlearn.functional import (
    UNPRUNING_SCORES,
    MaskedParameters,
    ScoreContext,
    apply_pruning,
    apply_unpruning,
    is_row_structured,
    regrow_toward,
    replay_lottery_masks,
    resolve_score,
    sparse_masks,
    swap_topology,
    unpruned_masks,
    unpruning_scores,
)
from lightning_unlearn.metrics.functional import mask_iou, sparsity
from tests.functional.built_case import built_data, built_models, linear_net

T, F = True, False


@pytest.fixture(scope="module")
def models():
    return built_models()


def retain_batches(n=4, size=32):
    x, y = built_data(0).tensors
    return [(x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]) for i in range(n)]


# ---------------------------------------------------------------------------------- by hand
def test_unpruned_masks_and_gradual_step_by_hand():
    masks = [torch.tensor([T, T, F, F, F, F])]
    scores = [torch.tensor([1.0, 2.0, 6.0, 5.0, 0.0, 0.0])]
    target = unpruned_masks(scores, masks)
    assert target[0].tolist() == [F, F, T, T, F, F]
    # d = 2 kept outside the target, turnover 0.5 -> 1 swap: drop the lowest (index 0), grow the best (index 2).
    assert regrow_toward(masks, target, scores, 0.5)[0].tolist() == [F, T, T, F, F, F]
    assert regrow_toward(masks, target, scores, 1.0)[0].tolist() == target[0].tolist()
    # layer scope keeps each tensor's count
    two = [torch.tensor([T, F]), torch.tensor([T, T, F, F])]
    out = unpruned_masks([torch.tensor([0.0, 9.0]), torch.tensor([1.0, 0.0, 3.0, 2.0])], two, scope="layer")
    assert [m.tolist() for m in out] == [[F, T], [F, F, T, T]]


def test_structured_topology_by_hand():
    masks = [torch.tensor([[T, T], [F, F], [T, T]])]
    assert is_row_structured(masks) and not is_row_structured([torch.tensor([[T, F], [T, T]])])
    assert not is_row_structured([torch.ones(2, 2, dtype=torch.bool)])  # nothing pruned
    scores = [torch.tensor([[1.0, 1.0], [5.0, 0.0], [0.5, 0.5]])]  # row sums 2, 5, 1
    assert unpruned_masks(scores, masks, structured=True)[0].tolist() == [[T, T], [T, T], [F, F]]


def test_swap_topology_drops_revives_and_remembers_values():
    p = nn.Parameter(torch.tensor([1.0, 2.0, 0.0, 0.0]))
    masked = MaskedParameters(["p"], [p], [torch.tensor([T, T, F, F])])
    masked.set_anchor_zero()
    values = [torch.tensor([0.0, 0.0, 7.0, 0.0])]
    dropped, revived, values = swap_topology(masked, [torch.tensor([F, T, T, F])], values, "original")
    assert dropped[0].tolist() == [T, F, F, F] and revived[0].tolist() == [F, F, T, F]
    assert p.tolist() == [0.0, 2.0, 7.0, 0.0] and values[0].tolist() == [1.0, 0.0, 7.0, 0.0]
    swap_topology(masked, [torch.tensor([T, T, F, F])], values, "zero")
    assert p.tolist() == [0.0, 2.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------- scores
def test_score_registry_and_dotted_paths():
    assert resolve_score("taylor") is UNPRUNING_SCORES["taylor"]
    assert resolve_score("tests.callbacks.test_unpruning.first_entries_score").__name__ == "first_entries_score"
    for bad, match in (("fisher", "Unknown `score`"), ("no.such.module.fn", "does not import"), (3, "`score` must be a name")):
        with pytest.raises(ValueError, match=match):
            resolve_score(bad)


def test_scores_by_hand_on_a_linear_model():
    net = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
    x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    batches = [(x, y)]
    w = net[0].weight.detach()
    leaf = w.clone().requires_grad_(True)
    g = torch.autograd.grad(nn.functional.cross_entropy(x @ leaf.T, y), leaf)[0]
    ctx = ScoreContext(net, ["0.weight"], [w.clone()], [torch.ones(2, 2, dtype=torch.bool)], batches, lr=0.1, gate=0.05)
    torch.testing.assert_close(UNPRUNING_SCORES["gradient"](ctx)[0], g.abs())
    torch.testing.assert_close(UNPRUNING_SCORES["taylor"](ctx)[0], (g * w).abs())
    torch.testing.assert_close(UNPRUNING_SCORES["magnitude_after_finetune"](ctx)[0], (w - 0.1 * g).abs())
    u = g.abs()
    torch.testing.assert_close(UNPRUNING_SCORES["retain_magnitude"](ctx)[0], w.abs() * u / (u + 0.05 * u.mean()))
    scored = unpruning_scores(
        "gradient",
        net,
        ["0.weight"],
        [net[0].weight],
        [torch.tensor([[T, F], [T, T]])],
        [torch.tensor([[0.0, 9.0], [0.0, 0.0]])],
        batches,
    )
    assert scored[0].dtype == torch.float32 and not scored[0].requires_grad
    with pytest.raises(ValueError, match="must return one tensor per parameter"):
        unpruning_scores(lambda ctx: [], net, ["0.weight"], [net[0].weight], [torch.ones(2, 2, dtype=torch.bool)], [w], batches)


# ---------------------------------------------------------------------------------- apply_unpruning
@pytest.mark.parametrize("score, with_values", [("retain_magnitude", True), ("taylor", True), ("gradient", False)])
def test_apply_unpruning_moves_a_sparse_model_toward_the_retain_only_reference(models, score, with_values):
    full, reference, _ = models
    net = copy.deepcopy(full)
    dense = {n: p.detach().clone() for n, p in net.named_parameters()}
    before = apply_pruning(net, amount=0.5)
    original_iou = float(mask_iou(before, reference))
    after = apply_unpruning(net, retain_batches(), score=score, values=dense if with_values else None)
    assert original_iou < 0.7  # D_f shaped the mask
    assert float(mask_iou(after, reference)) > original_iou + 0.25
    assert float(sparsity(after)) == 0.5
    assert not bool(after["0.weight"][:, 8:].any())  # no weight reading forget-only features survives
    assert bool((net[0].weight[~after["0.weight"]] == 0).all())
    revived = after["0.weight"] & ~before["0.weight"]
    expected = dense["0.weight"][revived] if with_values else torch.zeros(int(revived.sum()))
    assert bool(revived.any()) and torch.equal(net[0].weight[revived], expected)


def test_apply_unpruning_warns_when_values_before_pruning_are_unknown():
    net = linear_net()
    apply_pruning(net, amount=0.5)
    with pytest.warns(UserWarning, match="cannot come back"):
        apply_unpruning(net, retain_batches(1))


def test_apply_unpruning_on_a_torch_pruned_model_revives_at_the_original_values():
    net = linear_net()
    prune.random_unstructured(net[0], "weight", amount=0.75)
    original = net[0].weight_orig.detach().clone()
    before = sparse_masks(net, [("0.weight_orig", net[0].weight_orig)])[0]
    masks = apply_unpruning(net, retain_batches(2), score="gradient")
    after = masks["0.weight_orig"]
    revived = after & ~before
    assert int(after.sum()) == int(before.sum()) and bool(revived.any())
    assert torch.equal(net[0].weight_orig[revived], original[revived])  # weight_orig kept the values
    assert torch.equal(net[0].weight_mask.bool(), after) and bool((net[0].weight_orig[~after] == 0).all())


def test_apply_unpruning_bad_input():
    with pytest.raises(ValueError, match="no pruned entry"):
        apply_unpruning(linear_net(), retain_batches(1))
    with pytest.raises(ValueError, match="`batches` is empty"):
        apply_unpruning(linear_net(), [])
    with pytest.raises(ValueError, match="`revive` must be one of"):
        apply_unpruning(linear_net(), retain_batches(1), revive="random")


# ---------------------------------------------------------------------------------- replay
def full_batch_retained(steps: int):
    x, y = built_data(0).tensors
    return ((x[:240], y[:240]) for _ in range(steps))


def built_sgd(params):
    return torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=5e-4)


def test_replay_with_the_pipelines_own_budget_reproduces_the_retain_only_reference_exactly(models):
    full, reference, _ = models
    net = copy.deepcopy(full)
    original = apply_pruning(net, amount=0.5)  # the pipeline on all data: D_f shaped this mask
    assert float(mask_iou(original, reference)) < 0.7
    init = linear_net().state_dict()  # the pipeline's initialisation
    # One round, 150 full-batch SGD steps on D_r from the initialisation, 50 % global magnitude: the very
    # pipeline that made `reference`, so the replayed topology is the reference, entry for entry.
    masks = replay_lottery_masks(
        net, ["0.weight"], [original["0.weight"]], init, full_batch_retained(150), 1, 150, built_sgd, "global"
    )
    assert torch.equal(masks[0], reference["0.weight"])
    assert not bool(masks[0][:, 8:].any())  # no weight reading forget-only features survives
    assert torch.equal(net[0].weight, full[0].weight * original["0.weight"])  # the network itself is untouched


def test_replay_rounds_keep_each_layers_density_and_rows():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    masks = [torch.zeros(12, 16, dtype=torch.bool), torch.ones(4, 12, dtype=torch.bool)]
    masks[0][:5] = True  # 5 of 12 rows kept: a row-structured topology of the first layer
    masks[1][:, :3] = False  # 9 of 12 entries of each row of the second
    stream = ((torch.randn(32, 16), torch.randint(0, 4, (32,))) for _ in range(9))
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    out = replay_lottery_masks(
        net, ["0.weight", "2.weight"], masks, net.state_dict(), stream, 3, 3, sgd, "layer", structured=True
    )
    assert int(out[0].all(dim=1).sum()) == 5 and bool((out[0].all(dim=1) | ~out[0].any(dim=1)).all())
    assert int(out[1].all(dim=1).sum()) == 4  # rows of a layer whose rows were all kept stay kept
    layerwise = replay_lottery_masks(
        net,
        ["0.weight", "2.weight"],
        masks,
        net.state_dict(),
        ((torch.randn(8, 16), torch.randint(0, 4, (8,))) for _ in range(6)),
        2,
        3,
        sgd,
        "layer",
    )
    assert [int(m.sum()) for m in layerwise] == [80, 36]
    with pytest.raises(ValueError, match="stream ended early"):
        replay_lottery_masks(net, ["0.weight"], masks[:1], net.state_dict(), iter([]), 1, 1, sgd)
    with pytest.raises(ValueError, match="has no parameter"):
        replay_lottery_masks(net, ["5.weight"], masks[:1], net.state_dict(), iter([]), 1, 1, sgd)
