"""The masking core without a trainer: selection, top-k, bit packing, strict freeze, checkpoints of
masks, structured units, prune-and-regrow, write-through."""

import copy

import pytest
import torch
from torch import nn

from lightning_unlearn.functional import (
    MaskedParameters,
    check_scope,
    drop_and_regrow,
    expand_units,
    pack_mask,
    parameter_masks,
    select_parameters,
    top_units,
    topk_mask,
    turnover_at,
    unit_masks,
    unit_scores,
    unpack_mask,
    write_through,
    zero_optimizer_state,
)
from tests.callbacks.user_module import Tiny

T, F = True, False


# ---------------------------------------------------------------------------------- selection
def test_select_parameters_by_regex_default_and_errors():
    net = Tiny()
    names = [n for n, _ in select_parameters(net, None)]
    assert names == ["fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in select_parameters(net, r"weight$")] == ["fc1.weight", "bn.weight", "fc2.weight"]
    assert [n for n, _ in select_parameters(net, ["fc2", "^bn.bias"])] == ["bn.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in select_parameters(net, None, default=lambda n, p: p.ndim > 1)] == ["fc1.weight", "fc2.weight"]
    net.fc1.bias.requires_grad_(False)
    assert "fc1.bias" not in [n for n, _ in select_parameters(net, None)]
    with pytest.raises(ValueError, match=r"`parameters`.*matched no trainable parameter.*fc1.weight"):
        select_parameters(net, "conv")
    with pytest.raises(ValueError, match="invalid regex"):
        select_parameters(net, "(")


# ---------------------------------------------------------------------------------- top-k
def test_topk_mask_global_matches_hand_computation_with_ties():
    a = torch.tensor([[0.1, 0.9], [0.5, 0.5]])
    b = torch.tensor([0.5, 0.2, 0.95])
    # ranking over [0.1, .9, .5, .5 | .5, .2, .95]: .95(b2), .9(a1), then the ties .5 in flat order: a2, a3, b0
    masks = topk_mask([a, b], 4 / 7, "global")
    assert masks[0].tolist() == [[False, True], [True, True]]
    assert masks[1].tolist() == [False, False, True]
    masks = topk_mask([a, b], 3 / 7, "global")
    assert masks[0].tolist() == [[False, True], [True, False]] and masks[1].tolist() == [False, False, True]
    assert sum(int(m.sum()) for m in topk_mask([a, b], 0.5, "global")) == round(0.5 * 7)
    assert all(m.dtype == torch.bool and m.shape == s.shape for m, s in zip(masks, [a, b]))


def test_topk_mask_layer_scope_keeps_a_fraction_of_every_tensor():
    a = torch.tensor([3.0, 1.0, 2.0, 2.0])
    b = torch.tensor([0.0, 0.0, 0.0])
    masks = topk_mask([a, b], 0.5, "layer")
    assert masks[0].tolist() == [True, False, True, False]  # 3, then the first 2 (tie)
    assert masks[1].tolist() == [True, True, False]  # round(1.5) = 2, ties by position
    tiny = topk_mask([a, b], 0.01, "layer")
    assert [int(m.sum()) for m in tiny] == [1, 1]  # at least one per tensor
    assert all(m.all() for m in topk_mask([a, b], 1.0, "layer"))


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan")])
def test_topk_mask_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="`fraction` must be a fraction in \\(0, 1\\]"):
        topk_mask([torch.ones(3)], fraction, "global")


def test_topk_mask_rejects_unknown_scope():
    with pytest.raises(ValueError, match=r"`scope` must be one of \('global', 'layer'\), got 'tensor'.*'layer' each tensor"):
        topk_mask([torch.ones(3)], 0.5, "tensor")


def test_one_scope_check_for_the_whole_package():
    from lightning_unlearn.functional import masks, projection

    assert check_scope("layer") == "layer"
    assert projection.check_scope is masks.check_scope
    with pytest.raises(ValueError, match="`scope` must be one of"):
        check_scope(None)


def test_pack_unpack_roundtrip():
    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (8,), (3, 5, 2), (0,)]:
        mask = torch.rand(shape, generator=g) > 0.5
        packed = pack_mask(mask)
        assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
        assert torch.equal(unpack_mask(packed, shape), mask)
    assert pack_mask(torch.tensor([True, False, False, False, False, False, False, True])).tolist() == [129]


# ---------------------------------------------------------------------------------- structured units
def test_structured_units_rank_rows_and_expand_back():
    scores = [torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])]
    assert unit_scores(scores, True, "l2")[0].tolist() == [5.0, 1.0, 2.0]
    assert unit_scores(scores, True, "sum")[0].tolist() == [7.0, 1.0, 2.0]
    assert torch.equal(unit_scores(scores, False)[0], scores[0])
    masks = [torch.tensor([[T, F], [F, F], [F, T]])]
    assert unit_masks(masks, True)[0].tolist() == [T, F, T]
    assert expand_units([torch.tensor([T, F, T])], masks, True)[0].tolist() == [[T, T], [F, F], [T, T]]
    assert [m.tolist() for m in top_units([torch.ones(3)], 0.0, "global")] == [[F, F, F]]


# ---------------------------------------------------------------------------------- prune and regrow
def test_drop_and_regrow_matches_hand_computation():
    mask = torch.tensor([True, True, True, True, False, False, False, False])
    score = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.3, 2.0, 0.3, 0.0])
    new, swapped = drop_and_regrow([mask], [score], 0.5, "layer")
    # n = floor(0.5 * 4) = 2: drop the two smallest active (0.1 at 1, tie 0.1 at 3), grow 2.0 (5) and the first 0.3 (4)
    assert swapped == 2
    assert new[0].tolist() == [True, False, True, False, True, True, False, False]
    new, swapped = drop_and_regrow([mask], [score], 0.01, "layer")
    assert swapped == 1 and new[0].tolist() == [True, False, True, True, False, True, False, False]  # at least one
    a, b = torch.tensor([True, False]), torch.tensor([[True, False], [False, True]])
    new, swapped = drop_and_regrow([a, b], [torch.tensor([0.0, 5.0]), torch.tensor([[1.0, 0.5], [0.2, 3.0]])], 0.34, "global")
    assert swapped == 1 and new[0].tolist() == [False, True] and new[1].tolist() == [[True, False], [False, True]]
    assert drop_and_regrow([torch.ones(3, dtype=torch.bool)], [torch.ones(3)], 0.5, "layer")[1] == 0  # nothing inactive


def test_turnover_schedule_is_cosine():
    assert turnover_at(0.2, 0.0) == pytest.approx(0.2)
    assert turnover_at(0.2, 0.5) == pytest.approx(0.1)
    assert turnover_at(0.2, 1.0) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------- MaskedParameters
def test_masked_parameters_restore_and_optimizer_state():
    p = nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    masked = MaskedParameters(["p"], [p], [torch.tensor([True, False, True, False])])
    masked.capture_anchor()
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        p.grad = torch.ones(4)
        masked.mask_gradients()
        assert p.grad.tolist() == [1.0, 0.0, 1.0, 0.0]
        opt.step()
        masked.restore_frozen(opt)
        assert p[1].item() == 2.0 and p[3].item() == 4.0
        assert opt.state[p]["momentum_buffer"][[1, 3]].tolist() == [0.0, 0.0]
    assert p[0].item() != 1.0
    assert masked.density() == 0.5
    masked.set_anchor_zero()
    masked.apply()
    assert p[1].item() == 0.0 and p[3].item() == 0.0


def test_masked_parameters_state_dict_roundtrip():
    net, other = Tiny(), Tiny()
    other.load_state_dict(net.state_dict())
    named = select_parameters(net, None)
    masks = topk_mask([torch.randn_like(p) for _, p in named], 0.3, "global")
    masked = MaskedParameters([n for n, _ in named], [p for _, p in named], masks)
    masked.capture_anchor()
    state = copy.deepcopy(masked.state_dict())
    assert all(m.dtype == torch.uint8 for m in state["masks"])
    restored = MaskedParameters.from_state_dict(other, state)
    assert all(torch.equal(a, b) for a, b in zip(restored.masks, masked.masks))
    assert all(torch.equal(a, b) for a, b in zip(restored.anchor, masked.anchor))
    assert list(restored.by_name()) == [n for n, _ in named]
    with pytest.raises(ValueError, match="same model and `parameters` filter"):
        MaskedParameters(["x"], [nn.Parameter(torch.ones(2))], [torch.ones(2, dtype=torch.bool)]).load_state_dict(state)


# ---------------------------------------------------------------------------------- several holders
def test_parameter_masks_intersect_the_holders_masks():
    a, b, c = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(1))
    one = MaskedParameters(["a", "b"], [a, b], [torch.tensor([T, T, F]), torch.tensor([T, F])])
    two = MaskedParameters(["a"], [a], [torch.tensor([F, T, T])])
    masks = parameter_masks([c, a, b], [one, two])
    assert sorted(masks) == [1, 2]  # c is masked by nobody
    assert masks[1].tolist() == [F, T, F] and masks[2].tolist() == [T, F]


def test_write_through_moves_value_anchors_only_at_the_edited_entries():
    p = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    values = MaskedParameters(["p"], [p], [torch.tensor([T, F, F])])
    values.capture_anchor()  # frozen entries 1, 2 anchored at 2.0, 3.0
    zero = MaskedParameters(["p"], [p], [torch.tensor([T, T, F])])
    zero.set_anchor_zero()
    with torch.no_grad():
        p.copy_(torch.tensor([5.0, 6.0, 7.0]))  # an out-of-band edit
    write_through([values, zero], {id(p): torch.tensor([F, T, F])})
    values.apply()
    assert p.tolist() == [5.0, 6.0, 3.0]  # entry 1 takes the edit, entry 2 keeps its anchor
    assert zero.anchor is None and zero.anchor_zero
    write_through([values], {id(p): None})
    with torch.no_grad():
        p.fill_(0.0)
    values.apply()
    assert p.tolist() == [0.0, 6.0, 3.0]


def test_zero_optimizer_state_clears_every_tensor_state_of_the_parameters():
    p, q = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p, q])
    p.grad, q.grad = torch.ones(2), torch.ones(2)
    opt.step()
    zero_optimizer_state([opt], [p])
    assert all(bool((v == 0).all()) for v in opt.state[p].values() if v.shape == p.shape)
    assert bool((opt.state[q]["exp_avg"] != 0).all())
