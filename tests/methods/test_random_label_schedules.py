"""RandomLabel's schedules against a hand computation of the SalUn reference (OPTML-Group/
Unlearn-Saliency ``Classification/unlearn/RL.py``): what each epoch passes, and the weights after
the reference's update rule applied to the batches the method received."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_unlearn.data import ForgetSpec, UnlearningDataModule
from lightning_unlearn.functional.labels import random_labels
from lightning_unlearn.methods import RandomLabel
from tests.conftest import quiet_trainer, synthetic_dataset

CLASSES = 4


class RecordingRL(RandomLabel):
    """Records every training batch it receives, as ``{split: (x, y)}`` clones."""

    def training_step(self, batch, batch_idx):
        self.received.append({k: (v[0].clone(), v[1].clone()) for k, v in batch.items()})
        return super().training_step(batch, batch_idx)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES))


def tiny_data(forget=None):
    """100 blobs; 23 forget examples (batches of 8: 8, 8, 7) and 77 retain (batches of 16)."""
    forget = ForgetSpec(ratio=0.23, seed=0) if forget is None else forget
    return UnlearningDataModule(
        synthetic_dataset(100), synthetic_dataset(40, seed=1), forget=forget, batch_size=16, forget_batch_size=8
    )


def fit(schedule, epochs=2, **kwargs):
    dm = tiny_data()
    method = RecordingRL(tiny_model(), schedule=schedule, lr=0.05, seed=3, **kwargs)
    method.received = []
    quiet_trainer(max_epochs=epochs).fit(method, datamodule=dm)
    return method, dm


def reference_labels(seed, step, y):
    """The reference's draw, ``torch.randint(0, num_classes, target.shape)``, from the generator
    RandomLabel seeds for step ``step``."""
    return torch.randint(0, CLASSES, y.shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + step))


def examples(dm, split):
    x = dm.train_set.tensors[0][getattr(dm, f"{split}_indices")]
    return sorted(map(tuple, x.tolist()))


def test_sequential_epoch_is_one_forget_pass_then_one_retain_pass():
    method, dm = fit("sequential", epochs=2)
    per_epoch = 3 + 5  # ceil(23 / 8) forget batches, then ceil(77 / 16) retain batches
    assert len(method.received) == 2 * per_epoch
    for epoch in range(2):
        batches = method.received[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert [list(b) for b in batches] == [["forget"]] * 3 + [["retain"]] * 5
        assert [len(b["forget"][0]) for b in batches[:3]] == [8, 8, 7]
        for split, part in (("forget", batches[:3]), ("retain", batches[3:])):  # each example exactly once
            seen = sorted(map(tuple, torch.cat([b[split][0] for b in part]).tolist()))
            assert seen == examples(dm, split)
    first = torch.cat([b["forget"][0] for b in method.received[:3]])
    second = torch.cat([b["forget"][0] for b in method.received[per_epoch : per_epoch + 3]])
    assert not torch.equal(first, second)  # reshuffled every epoch


def test_shuffled_epoch_is_one_pass_over_the_union_in_mixed_batches():
    method, dm = fit("shuffled", epochs=1)
    assert len(method.received) == 7  # ceil(100 / 16)
    assert sum("forget" in b and "retain" in b for b in method.received) >= 3  # mixed batches
    assert [sum(len(v[0]) for v in b.values()) for b in method.received] == [16] * 6 + [4]
    for split in ("forget", "retain"):
        seen = sorted(map(tuple, torch.cat([b[split][0] for b in method.received if split in b]).tolist()))
        assert seen == examples(dm, split)


@pytest.mark.parametrize("schedule", ["sequential", "shuffled"])
def test_weights_equal_the_reference_update_on_the_same_batches(schedule):
    """The reference's loop on the batches the method received: SGD(lr, momentum 0.9, wd 5e-4),
    model in train mode; a forget example's target is ``randint(0, K)``; one batch-mean CE per
    step (sequential: forget-only then retain-only steps; shuffled: the relabelled union)."""
    method, _ = fit(schedule, epochs=2)
    reference = tiny_model().train()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for step, batch in enumerate(method.received):
        xs, targets = [], []
        if "forget" in batch:
            xs.append(batch["forget"][0])
            targets.append(reference_labels(3, step, batch["forget"][1]))
        if "retain" in batch:
            xs.append(batch["retain"][0])
            targets.append(batch["retain"][1])
        loss = F.cross_entropy(reference(torch.cat(xs)), torch.cat(targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    exact = schedule == "sequential"  # mixed batches: our sum / n vs the reference's mean, float rounding
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(
            method.model.state_dict()[key], value, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6, msg=key
        )


def test_alpha_weights_the_retain_steps():
    method, _ = fit("sequential", epochs=1, alpha=0.5)
    reference = tiny_model().train()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for step, batch in enumerate(method.received):
        ((split, (x, y)),) = batch.items()
        if split == "forget":
            loss = F.cross_entropy(reference(x), reference_labels(3, step, y))
        else:
            loss = 0.5 * F.cross_entropy(reference(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(method.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_paired_schedule_keeps_the_earlier_behaviour():
    method, _dm = fit("paired", epochs=1, exclude_true_label=True)
    assert len(method.received) == 5  # one pass over D_r (5 batches), D_f cycled alongside
    assert all(set(b) == {"forget", "retain"} and len(b["forget"][0]) == 8 for b in method.received)
    assert RandomLabel(tiny_model(), epoch_split="forget").schedule == "paired"
    assert RandomLabel(tiny_model(), alpha=0.0).schedule == "paired"  # the forget-only objective
    assert RandomLabel(tiny_model()).schedule == "sequential"


def test_label_draw_follows_the_reference_by_default():
    y = torch.arange(20000) % CLASSES
    generator = torch.Generator().manual_seed(0)
    reference = torch.randint(0, CLASSES, y.shape, generator=torch.Generator().manual_seed(0))
    drawn = random_labels(y, CLASSES, exclude_true_label=False, generator=generator)
    assert torch.equal(drawn, reference)  # the reference's randint, true label included
    assert abs((drawn == y).float().mean().item() - 1 / CLASSES) < 0.01
    excluded = random_labels(y, CLASSES, exclude_true_label=True, generator=torch.Generator().manual_seed(0))
    assert not (excluded == y).any()
    assert RandomLabel(tiny_model()).exclude_true_label is False


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(schedule="sequential", epoch_split="forget"), "`epoch_split` applies to the paired schedule only"),
        (dict(schedule="shuffled", alpha=0.0), "`alpha`=0 with schedule='shuffled'"),
        (dict(schedule="alternating"), "`schedule` must be one of"),
    ],
)
def test_bad_schedules_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomLabel(tiny_model(), **kwargs)


def test_one_pass_plan_splits_by_batch_across_ranks():
    """Under DDP Lightning hands every rank a strided share of the plan's batches (its sampler
    wrapper does not reshuffle a custom sampler): together the ranks see each example once, and
    each rank still sees its forget batches before its retain batches."""
    from lightning_unlearn.data.batch_plan import OnePassPlan

    plan = OnePassPlan(23, 77, batch_size=16, forget_batch_size=8, plan="sequential", seed=0)
    batches = list(plan)
    shares = [batches[rank::2] for rank in range(2)]
    assert sorted(i for share in shares for batch in share for i in batch) == list(range(100))
    for share in shares:
        kinds = [all(i < 23 for i in batch) for batch in share]
        assert kinds == sorted(kinds, reverse=True)  # forget batches first
    assert len(plan) == len(batches) == 8
    plan.set_epoch(1)
    assert list(plan) != batches
    plan.set_epoch(0)
    assert list(plan) == batches
