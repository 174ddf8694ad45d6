"""OPTML MIA-Efficacy: features, protocol (first len(test) retain rows), Metric vs functional."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from lightning_unlearn.metrics import MIAEfficacy
from lightning_unlearn.metrics.functional import mia_efficacy, true_class_confidence


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The native solver issues many small ops; on a shared 2-core runner a second thread only adds contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _optml_reference(retain, test, forget):
    """OPTML-Group Unlearn-Saliency SVC_MIA.py (SVC_fit_predict with target_train=None), re-typed."""
    shadow_train = retain[: len(test)]  # Subset(retain_dataset, range(len(test_dataset)))
    x_shadow = np.concatenate([shadow_train, test]).reshape(len(shadow_train) + len(test), -1)
    y_shadow = np.concatenate([np.ones(len(shadow_train)), np.zeros(len(test))])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x_shadow, y_shadow)
    return 1 - clf.predict(forget.reshape(len(forget), -1)).mean()


def _confidences(rng, n, a, b=1.0):
    return torch.from_numpy(rng.beta(a, b, n).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# true_class_confidence


def test_true_class_confidence_matches_softmax_gather():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g) * 4
    target = torch.randint(0, 7, (50,), generator=g)
    expected = torch.softmax(logits, dim=1)[torch.arange(50), target]
    conf = true_class_confidence(logits, target)
    assert conf.shape == (50,) and conf.dtype == torch.float32
    torch.testing.assert_close(conf, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_true_class_confidence_half_precision_is_computed_in_float32(dtype):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(40, 10, generator=g) * 8).to(dtype)
    target = torch.randint(0, 10, (40,), generator=g)
    conf = true_class_confidence(logits, target)
    assert conf.dtype == torch.float32
    expected = torch.softmax(logits.double(), dim=1)[torch.arange(40), target].float()
    torch.testing.assert_close(conf, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "logits, target, match",
    [
        (torch.randn(4), torch.zeros(4, dtype=torch.long), "`logits`"),
        (torch.randn(4, 3), torch.zeros(4), "`target`"),
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.long), "same number of samples"),
        (torch.randn(4, 3), torch.tensor([0, 1, 3, 0]), r"\[0, 3\)"),
        (torch.randn(4, 3), torch.tensor([0, -1, 2, 0]), r"\[0, 3\)"),
    ],
)
def test_true_class_confidence_rejects_bad_inputs(logits, target, match):
    with pytest.raises(ValueError, match=match):
        true_class_confidence(logits, target)


# ---------------------------------------------------------------------------------------------
# mia_efficacy


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_hand_checkable_extremes(backend):
    rng = np.random.default_rng(0)
    retain = torch.from_numpy(0.95 + 0.05 * rng.random(300).astype(np.float32))  # members near 1
    test = torch.from_numpy(0.2 + 0.3 * rng.random(200).astype(np.float32))  # non-members in [0.2, 0.5]
    member_side = torch.tensor([0.97, 0.99, 1.0, 0.96])
    non_member_side = torch.tensor([0.25, 0.3, 0.4, 0.45, 0.35])
    assert mia_efficacy(retain, test, member_side, backend=backend).item() == 0.0
    assert mia_efficacy(retain, test, non_member_side, backend=backend).item() == 1.0
    mixed = torch.cat([member_side, non_member_side])
    assert mia_efficacy(retain, test, mixed, backend=backend).item() == pytest.approx(5 / 9)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_returns_float32_scalar_on_forget_device(backend):
    rng = np.random.default_rng(1)
    eff = mia_efficacy(_confidences(rng, 100, 8), _confidences(rng, 100, 3), _confidences(rng, 30, 5), backend=backend)
    assert eff.ndim == 0 and eff.dtype == torch.float32 and eff.device == torch.device("cpu")
    assert 0.0 <= eff.item() <= 1.0


def test_sklearn_backend_reproduces_the_optml_code():
    rng = np.random.default_rng(2)
    retain, test, forget = _confidences(rng, 900, 8), _confidences(rng, 600, 4, 1.5), _confidences(rng, 400, 6)
    expected = _optml_reference(retain.numpy(), test.numpy(), forget.numpy())
    assert mia_efficacy(retain, test, forget, backend="sklearn").item() == pytest.approx(expected, abs=1e-7)
    assert abs(mia_efficacy(retain, test, forget, backend="torch").item() - expected) <= 0.01


def test_only_the_first_len_test_retain_rows_are_members():
    rng = np.random.default_rng(3)
    test = _confidences(rng, 300, 3, 2)
    head = _confidences(rng, 300, 20)  # confident members: exactly len(test) rows
    # After the cutoff: rows that look like non-members. Were they used as members, the attack
    # would call low-confidence forget samples members.
    tail = torch.from_numpy(rng.uniform(0.0, 0.5, 2000).astype(np.float32))
    forget = torch.from_numpy(rng.uniform(0.05, 0.45, 400).astype(np.float32))

    full = mia_efficacy(torch.cat([head, tail]), test, forget, backend="sklearn").item()
    truncated = mia_efficacy(head, test, forget, backend="sklearn").item()
    assert full == truncated
    assert full == pytest.approx(_optml_reference(torch.cat([head, tail]).numpy(), test.numpy(), forget.numpy()))
    # the same rows placed before the cutoff do change the answer: the test above could fail
    tail_first = mia_efficacy(torch.cat([tail, head]), test, forget, backend="sklearn").item()
    assert tail_first < full - 0.2
    assert mia_efficacy(torch.cat([head, tail]), test, forget, backend="torch").item() == pytest.approx(full, abs=0.01)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_retain_shorter_than_test_uses_all_retain_rows(backend):
    rng = np.random.default_rng(4)
    retain, test, forget = _confidences(rng, 150, 10), _confidences(rng, 400, 3), _confidences(rng, 200, 6)
    expected = _optml_reference(retain.numpy(), test.numpy(), forget.numpy())
    assert mia_efficacy(retain, test, forget, backend=backend).item() == pytest.approx(expected, abs=0.01)


def test_multidimensional_features():
    rng = np.random.default_rng(5)
    retain = torch.from_numpy(rng.dirichlet([9, 1, 1], 400).astype(np.float32))
    test = torch.from_numpy(rng.dirichlet([3, 1, 1], 300).astype(np.float32))
    forget = torch.from_numpy(rng.dirichlet([5, 1, 1], 200).astype(np.float32))
    expected = _optml_reference(retain.numpy(), test.numpy(), forget.numpy())
    assert mia_efficacy(retain, test, forget, backend="sklearn").item() == pytest.approx(expected, abs=1e-7)
    assert mia_efficacy(retain, test, forget).item() == pytest.approx(expected, abs=0.01)


GOOD = (torch.tensor([0.9, 0.95, 0.99]), torch.tensor([0.3, 0.5, 0.6]), torch.tensor([0.4, 0.97]))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.zeros(0), GOOD[1], GOOD[2]), {}, "`retain_features` is empty"),
        ((GOOD[0], torch.zeros(0), GOOD[2]), {}, "`test_features` is empty"),
        ((GOOD[0], GOOD[1], torch.zeros(0, 1)), {}, "`forget_features` is empty"),
        ((GOOD[0], GOOD[1], torch.zeros(2, 3)), {}, "feature dimensions differ"),
        ((GOOD[0], torch.zeros(3, 1, 1), GOOD[2]), {}, "`test_features`"),
        (GOOD, {"C": 0.0}, "`C`"),
        (GOOD, {"C": -3.0}, "`C`"),
        (GOOD, {"gamma": "fast"}, "`gamma`"),
        (GOOD, {"gamma": -1.0}, "`gamma`"),
        (GOOD, {"backend": "cuml"}, "`backend`"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mia_efficacy(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# MIAEfficacy metric


def _logits_for(conf: torch.Tensor, target: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """Logits whose true-class softmax probability is ``conf`` (others share the rest equally)."""
    other = (1 - conf) / (num_classes - 1)
    probs = other.unsqueeze(1).repeat(1, num_classes)
    probs[torch.arange(len(conf)), target] = conf
    return probs.clamp_min(1e-12).log()


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_metric_over_batches_equals_functional_in_arrival_order(backend):
    rng = np.random.default_rng(6)
    g = torch.Generator().manual_seed(6)
    # retain: confident rows first, then (after len(test) rows) non-member-looking rows
    tail = torch.from_numpy(rng.uniform(0.0, 0.5, 300).astype(np.float32))
    retain_conf = torch.cat([_confidences(rng, 200, 20), tail])
    test_conf = _confidences(rng, 200, 3, 2)
    forget_conf = torch.from_numpy(rng.uniform(0.0, 1.0, 150).astype(np.float32))
    data = {}
    for split, conf in (("retain", retain_conf), ("test", test_conf), ("forget", forget_conf)):
        target = torch.randint(0, 3, (len(conf),), generator=g)
        data[split] = (_logits_for(conf.double(), target).float(), target)

    metric = MIAEfficacy(backend=backend)
    # interleave the splits; each split's batches arrive in dataset order
    for start in range(0, 500, 64):
        for split, (logits, target) in data.items():
            if start < len(target):
                metric.update(logits[start : start + 64], target[start : start + 64], split=split)

    features = {split: true_class_confidence(*data[split]) for split in data}
    torch.testing.assert_close(features["retain"], retain_conf, rtol=1e-4, atol=1e-5)  # sanity of the helper
    expected = mia_efficacy(features["retain"], features["test"], features["forget"], backend=backend)
    assert metric.compute().item() == expected.item()
    # order matters: the same retain rows in another order give another answer
    shuffled = features["retain"].flip(0)
    assert mia_efficacy(shuffled, features["test"], features["forget"], backend=backend).item() != expected.item()


def test_metric_forward_updates_and_reset_clears():
    rng = np.random.default_rng(7)
    metric = MIAEfficacy()
    target = torch.zeros(100, dtype=torch.long)
    assert metric(_logits_for(_confidences(rng, 100, 20).double(), target), target, split="retain") is None
    metric(_logits_for(_confidences(rng, 100, 2, 2).double(), target), target, "test")
    metric.update(_logits_for(torch.tensor([0.999, 0.2], dtype=torch.float64), target[:2]), target[:2], "forget")
    assert metric.compute().item() == pytest.approx(0.5)
    metric.reset()
    with pytest.raises(ValueError, match="'retain'"):
        metric.compute()


def test_metric_compute_raises_when_a_split_is_missing():
    metric = MIAEfficacy()
    logits, target = torch.randn(8, 3), torch.randint(0, 3, (8,))
    metric.update(logits, target, split="retain")
    metric.update(logits, target, split="forget")
    with pytest.raises(ValueError, match="no 'test' samples"):
        metric.compute()


def test_metric_rejects_bad_split_and_arguments():
    metric = MIAEfficacy()
    with pytest.raises(ValueError, match="`split`"):
        metric.update(torch.randn(2, 3), torch.tensor([0, 1]), split="val")
    with pytest.raises(ValueError, match="`backend`"):
        MIAEfficacy(backend="svm")
    with pytest.raises(ValueError, match="`C`"):
        MIAEfficacy(C=0)
    with pytest.raises(ValueError, match="`gamma`"):
        MIAEfficacy(gamma="none")
    assert MIAEfficacy.higher_is_better is True
    assert all(metric._reductions[f"{s}_conf"].__name__ == "dim_zero_cat" for s in ("retain", "test", "forget"))


def test_positions_make_the_metric_independent_of_order_and_padding():
    """With ``index``, batches may arrive in any order (ranks of a DDP run) and padded duplicates
    (a DistributedSampler's) count once: the value equals the in-order, duplicate-free one."""
    g = torch.Generator().manual_seed(0)
    logits = {s: torch.randn(n, 4, generator=g) * 3 for s, n in (("retain", 50), ("test", 20), ("forget", 15))}
    target = {s: torch.randint(0, 4, (len(v),), generator=g) for s, v in logits.items()}
    plain = MIAEfficacy()
    for split in logits:
        plain.update(logits[split], target[split], split)
    shuffled = MIAEfficacy()
    for split in logits:
        order = torch.randperm(len(logits[split]), generator=g)
        order = torch.cat([order, order[:3]])  # padding: three samples twice
        for chunk in order.split(7):
            shuffled.update(logits[split][chunk], target[split][chunk], split, index=chunk)
    assert shuffled.compute() == plain.compute()
    with pytest.raises(ValueError, match="always or never"):
        shuffled.update(logits["test"][:2], target["test"][:2], "test")
