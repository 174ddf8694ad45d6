"""Sparsity, mask IoU and the topology gap against hand computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lightning_unlearn.metrics import MaskIoU, Sparsity, topology_report
from lightning_unlearn.metrics.functional import (
    gap_closed,
    load_masks,
    mask_iou,
    masks_of,
    resolve_topology,
    sparsity,
    topology_gap,
)

T, F = True, False
A = {"l1.weight": torch.tensor([[T, T, F], [F, F, F]]), "l2.weight": torch.tensor([T, F, T, T])}
B = {"l1.weight": torch.tensor([[T, F, F], [F, T, F]]), "l2.weight": torch.tensor([T, T, T, T]), "only_b": torch.tensor([T])}


def test_sparsity_global_and_per_layer_by_hand():
    # l1: 4 of 6 pruned, l2: 1 of 4 pruned -> 5 / 10 globally.
    assert float(sparsity(A)) == pytest.approx(0.5)
    per_layer = sparsity(A, per_layer=True)
    assert {k: float(v) for k, v in per_layer.items()} == pytest.approx({"l1.weight": 4 / 6, "l2.weight": 0.25})
    assert float(sparsity(list(A.values()))) == pytest.approx(0.5)
    assert float(sparsity({"w": torch.tensor([0.0, 1.5, -2.0, 0.0])})) == pytest.approx(0.5)  # non-bool: zeros pruned


def test_mask_iou_by_hand_over_shared_names():
    # l1: A = {00, 01}, B = {00, 11}: |and| = 1, |or| = 3; l2: A = {0, 2, 3}, B = all: |and| = 3, |or| = 4.
    assert float(mask_iou(A, B)) == pytest.approx(4 / 7)
    per_layer = {k: float(v) for k, v in mask_iou(A, B, per_layer=True).items()}
    assert per_layer == pytest.approx({"l1.weight": 1 / 3, "l2.weight": 3 / 4})  # "only_b" is not shared
    assert float(mask_iou(A, A)) == 1.0
    assert float(mask_iou({"w": torch.zeros(3, dtype=torch.bool)}, {"w": torch.zeros(3, dtype=torch.bool)})) == 1.0


def test_topology_gap():
    gap = topology_gap(B, A, B)
    assert gap["iou_unpruned"] == 1.0 and gap["iou_original"] == pytest.approx(4 / 7)
    assert gap["gain"] == pytest.approx(3 / 7)


def test_gap_closed_and_the_noise_floor_by_hand():
    # Original O, reference R, reference' R2 (same pipeline, another data order), un-pruned U; 8 entries, 4 kept each.
    O = {"w": torch.tensor([T, T, T, T, F, F, F, F])}  # noqa: E741
    R = {"w": torch.tensor([T, T, F, F, T, T, F, F])}
    R2 = {"w": torch.tensor([T, T, F, F, T, F, T, F])}
    U = {"w": torch.tensor([T, T, F, F, T, F, F, T])}
    # IoU(O, R) = 2/6, IoU(O, R2) = 2/6; IoU(R, R2) = 3/5; IoU(U, R) = 3/5, IoU(U, R2) = 3/5.
    gap = topology_gap(U, O, R, [R2])
    assert gap["iou_original"] == pytest.approx(1 / 3) and gap["iou_unpruned"] == pytest.approx(3 / 5)
    assert gap["floor"] == pytest.approx(3 / 5)
    assert gap["before"] == pytest.approx(1 / 3) and gap["after"] == pytest.approx(3 / 5)
    assert gap["gap_closed"] == pytest.approx(1.0)  # as close to the reference as another retrain is
    assert topology_gap(O, O, R, [R2])["gap_closed"] == 0.0  # nothing moved
    half = (1 / 3 + 3 / 5) / 2
    assert gap_closed(1 / 3, half, 3 / 5) == pytest.approx(0.5)
    assert gap_closed(0.6, 0.7, 0.6) != gap_closed(0.6, 0.7, 0.6)  # NaN: no gap beyond the noise floor to close
    # two noise references: the floor is the mean over the three pairs of references
    R3 = {"w": torch.tensor([T, F, F, F, T, T, F, T])}
    three = topology_gap(U, O, R, [R2, R3])
    pairs = [float(mask_iou(a, b)) for a, b in ((R, R2), (R, R3), (R2, R3))]
    assert three["floor"] == pytest.approx(sum(pairs) / 3)
    assert three["before"] == pytest.approx(sum(float(mask_iou(O, r)) for r in (R, R2, R3)) / 3)


def test_topology_report_takes_the_noise_reference_of_the_unpruning_holder():
    R = {"w": torch.tensor([T, T, F, F])}
    R2 = {"w": torch.tensor([T, F, T, F])}

    class Holder:
        def topology_masks(self):
            return R

        def topology_before(self):
            return {"w": torch.tensor([F, F, T, T])}

        def topology_reference(self):
            return R

        def topology_noise_references(self):
            return [R2]

    report = topology_report([Holder()])
    # floor IoU(R, R2) = 1/3; before = (0 + 1/3) / 2 = 1/6; after = (1 + 1/3) / 2 = 2/3; (2/3 - 1/6) / (1/3 - 1/6) = 3
    assert report["floor"] == pytest.approx(1 / 3) and report["before"] == pytest.approx(1 / 6)
    assert report["gap_closed"] == pytest.approx(3.0)


def test_resolve_topology_sources(tmp_path):
    net = nn.Linear(3, 2)
    with torch.no_grad():
        net.weight[1] = 0.0
    kept = {"weight": torch.tensor([[T, T, T], [F, F, F]]), "bias": torch.tensor([T, T])}
    assert torch.equal(resolve_topology("model", net)["weight"], kept["weight"])
    torch.save(net.state_dict(), tmp_path / "sparse.pt")
    assert torch.equal(resolve_topology(str(tmp_path / "sparse.pt"))["weight"], kept["weight"])
    assert torch.equal(resolve_topology(lambda n: {"weight": n.weight != 0}, net)["weight"], kept["weight"])
    with pytest.raises(ValueError, match="neither 'model'"):
        resolve_topology("no_such_package.masks")


def test_masks_of_a_network_reads_zeros_and_torch_prune_masks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        net[0].weight[0] = 0.0
    prune.l1_unstructured(net[3], "weight", amount=0.5)  # net[3].weight_orig stays dense
    masks = masks_of(net)
    assert sorted(masks) == ["0.weight", "3.weight"]  # BN weights are not prunable; `_orig` stripped
    assert torch.equal(masks["3.weight"], net[3].weight_mask.bool())
    assert int((~masks["0.weight"]).sum()) == 9
    assert float(sparsity(net)) == pytest.approx((9 + 12) / (18 + 24))


def test_load_masks_from_a_lightning_style_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    prune.l1_unstructured(net[0], "weight", amount=0.5)
    with torch.no_grad():
        net[2].weight[0] = 0.0
    path = tmp_path / "ref.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, path)
    loaded = load_masks(str(path))
    assert float(mask_iou(loaded, net)) == 1.0
    assert float(mask_iou(str(path), masks_of(net))) == 1.0


def test_modular_metrics_match_functional():
    s = Sparsity()
    s.update({"l1.weight": A["l1.weight"]})
    s.update({"l2.weight": A["l2.weight"]})
    assert float(s.compute()) == pytest.approx(float(sparsity(A)))
    iou = MaskIoU()
    iou.update(A, B)
    iou.update(A, A)  # adds |and| = |or| = 5
    assert float(iou.compute()) == pytest.approx((4 + 5) / (7 + 5))


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="share no parameter name"):
        mask_iou({"a": torch.ones(2, dtype=torch.bool)}, {"b": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shapes"):
        mask_iou({"a": torch.ones(2, dtype=torch.bool)}, {"a": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="no conv or linear weight"):
        masks_of(nn.BatchNorm1d(3))
    with pytest.raises(FileNotFoundError, match="retained"):
        load_masks("does/not/exist.ckpt")
    with pytest.raises(ValueError, match="mapping"):
        sparsity(3)


def test_the_prune_interop_is_the_pruning_core():
    from lightning_unlearn.functional import pruning
    from lightning_unlearn.metrics.functional import topology

    assert topology.canonical_name is pruning.canonical_name and topology.prunable_weights is pruning.prunable_weights
    assert topology.PRUNE_SUFFIX == pruning.PRUNE_SUFFIX == "_orig"
