"""SSD's ``data_flow="reference"`` against a hand computation of the reference
(if-loops/selective-synaptic-dampening ``src/ssd.py`` ``calc_importance`` / ``modify_weight`` with
``forget_*_main.py``'s ``DataLoader(ConcatDataset((retain, forget)), batch_size=B)``): I_D is the
mean squared batch gradient over the retain examples then the forget examples, re-cut into
batches of B (a mixed batch at the seam)."""

import pytest
import torch
import torch.nn.functional as F

from lightning_unlearn.data import ForgetSpec, UnlearningDataModule
from lightning_unlearn.methods import SSD
from tests.conftest import quiet_trainer, synthetic_dataset
from tests.methods.test_ssd import RecordingSSD, tiny_data, tiny_model


def grad_sq(model, x, y):
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    return [g * g for g in grads]


def mean_importance(model, batches):
    total = [torch.zeros_like(p) for p in model.parameters()]
    for x, y in batches:
        total = [a + b for a, b in zip(total, grad_sq(model, x, y))]
    return [t / len(batches) for t in total]


def reference_edit(model, forget_batches, full_batches, alpha, lam):
    """modify_weight: where I_f > alpha I_D, p *= min(lam I_D / I_f, 1) (exponent 1, lower_bound 1)."""
    imp_f, imp_d = mean_importance(model, forget_batches), mean_importance(model, full_batches)
    with torch.no_grad():
        for p, f, d in zip(model.parameters(), imp_f, imp_d):
            locations = torch.where(f > d * alpha)
            update = (d * lam / f)[locations]
            update[update > 1] = 1
            p[locations] = p[locations] * update
    return model


def recorded_fit(dm, data_flow, alpha=1.5, lam=0.8):
    method = RecordingSSD(tiny_model(), alpha=alpha, lam=lam, data_flow=data_flow)
    method.seen_batches = []
    quiet_trainer(max_epochs=1).fit(method, datamodule=dm)
    return method


def test_reference_flow_equals_the_hand_computation():
    dm = tiny_data()  # 25 forget (batches of 8), 75 retain (batches of 16): 75 is not a multiple of 16
    method = recorded_fit(dm, "reference")
    forget = [(x, y) for s, x, y in method.seen_batches if s == "forget"]
    retain = [(x, y) for s, x, y in method.seen_batches if s == "retain"]
    assert [len(x) for x, _ in forget] == [8, 8, 8, 1] and sum(len(x) for x, _ in retain) == 75
    xs = torch.cat([x for x, _ in retain] + [x for x, _ in forget])  # ConcatDataset((retain, forget))
    ys = torch.cat([y for _, y in retain] + [y for _, y in forget])
    full = [(xs[i : i + 16], ys[i : i + 16]) for i in range(0, 100, 16)]  # DataLoader(batch_size=16)
    assert len(full) == 7 and set(ys[64:80].tolist()) != {0} and 0 in ys[64:80].tolist()  # the mixed seam batch
    expected = reference_edit(tiny_model().eval(), forget, full, 1.5, 0.8)
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(method.model.state_dict()[key], value, rtol=1e-5, atol=1e-7, msg=key)
    assert method.trainer.callback_metrics["edit/full_batches"] == 7
    paired = recorded_fit(tiny_data(), "paired")
    assert paired.trainer.callback_metrics["edit/selected"] != method.trainer.callback_metrics["edit/selected"]


def test_both_flows_agree_when_the_retain_set_fills_whole_batches():
    """|D_r| a multiple of B and the forget batches of the same size: no seam, no offset."""

    def data():
        return UnlearningDataModule(
            synthetic_dataset(64),
            synthetic_dataset(40, seed=1),
            forget=ForgetSpec(classes=[0]),
            batch_size=16,
            forget_batch_size=16,
        )  # 16 forget, 48 retain

    reference, paired = recorded_fit(data(), "reference"), recorded_fit(data(), "paired")
    assert reference.trainer.callback_metrics["edit/selected"] == paired.trainer.callback_metrics["edit/selected"] > 0
    for (key, value), other in zip(reference.model.state_dict().items(), paired.model.state_dict().values()):
        torch.testing.assert_close(value, other, rtol=1e-5, atol=1e-7, msg=key)


def test_reference_flow_has_no_selection_bound_error_and_bad_flow_is_refused():
    recorded_fit(tiny_data(), "reference", alpha=50.0)  # paired raises for alpha >= (N_r + N_f) / N_f
    with pytest.raises(ValueError, match="selects no parameter"):
        recorded_fit(tiny_data(), "paired", alpha=50.0)
    with pytest.raises(ValueError, match="`data_flow` must be one of"):
        SSD(tiny_model(), data_flow="concat")
