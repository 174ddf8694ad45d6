"""Relapse metrics against a hand computation."""

import torch
from torch import nn

from lightning_unlearn.metrics import relapse_deltas, relapse_metrics
from lightning_unlearn.metrics.functional import mia_efficacy, true_class_confidence


class Fixed(nn.Module):
    """Returns the rows of a logits table indexed by the input."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, index):
        return self.table[index.long().flatten()]


def test_relapse_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 3, generator=g) * 3
    labels = torch.randint(3, (40,), generator=g)
    model = Fixed(logits)
    idx = torch.arange(40)
    retain, test = (idx[:20], labels[:20]), (idx[20:30], labels[20:30])
    earlier = [[(idx[30:35], labels[30:35])], [(idx[35:], labels[35:])]]
    rows = relapse_metrics(model, earlier, [retain], [test], mia_backend="sklearn")
    conf = true_class_confidence(logits, labels)
    for row, sl in zip(rows, (slice(30, 35), slice(35, 40))):
        accuracy = float((logits[sl].argmax(1) == labels[sl]).float().mean())
        assert abs(row["forget_acc"] - accuracy) < 1e-6 and abs(row["unlearning_accuracy"] - (1 - accuracy)) < 1e-6
        expected = float(mia_efficacy(conf[:20], conf[20:30], conf[sl], backend="sklearn"))
        assert abs(row["mia_efficacy"] - expected) < 1e-6
    assert relapse_metrics(model, [], [retain], [test]) == []


def test_relapse_deltas_sign_convention():
    own = [{"forget_acc": 0.0, "mia_efficacy": 1.0}, {"forget_acc": 0.1, "mia_efficacy": 0.9}]
    per_step = [
        [],
        [{"forget_acc": 0.5, "mia_efficacy": 0.5}],
        [{"forget_acc": 0.25, "mia_efficacy": 1.0}, {"forget_acc": 0.1, "mia_efficacy": 0.9}],
    ]
    deltas = relapse_deltas(per_step, own)
    assert deltas[1] == [{"forget_acc": 0.5, "mia_efficacy": 0.5}]  # accuracy up, MIA down: relapse
    assert deltas[2][0] == {"forget_acc": 0.25, "mia_efficacy": 0.0} and deltas[2][1] == {"forget_acc": 0.0, "mia_efficacy": 0.0}
