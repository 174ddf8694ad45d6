"""Representation audits: CKA invariances and the HSIC formula; probes against scikit-learn;
Metrics merge exactly; the feature layer defaults."""

from __future__ import annotations

import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from lightning_unlearn.functional import feature_tap, forward_with_features, resolve_feature_layer
from lightning_unlearn.metrics import FeatureProbe, LinearCKA
from lightning_unlearn.metrics.functional import knn_accuracy, linear_cka, linear_probe_accuracy
from lightning_unlearn.models import ResNet18, SmallCNN


def _features(n: int = 120, d: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_is_one_for_identical_features_and_invariant_to_rotation_and_scale():
    x = _features()
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert float(linear_cka(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(linear_cka(x, x @ q)) == pytest.approx(1.0, abs=1e-12)
    assert float(linear_cka(x, 7.5 * x)) == pytest.approx(1.0, abs=1e-12)
    y = _features(seed=2)
    assert float(linear_cka(x, y)) == pytest.approx(float(linear_cka(x @ q * 0.3, y)), abs=1e-12)
    assert float(linear_cka(x, y)) < 0.3


def test_cka_equals_the_hsic_formula():
    x, y = _features(50, 6, 3), _features(50, 4, 4) + 0.5 * _features(50, 6, 3)[:, :4]
    n = 50
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n

    def hsic(k: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (h @ k @ h * (h @ m @ h)).sum()

    k, m = x @ x.T, y @ y.T
    assert float(linear_cka(x, y)) == pytest.approx(float(hsic(k, m) / torch.sqrt(hsic(k, k) * hsic(m, m))), rel=1e-10)


def test_knn_probe_equals_sklearn_cosine_knn():
    g = torch.Generator().manual_seed(5)
    train_y, eval_y = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (80,), generator=g)
    train_x = torch.randn(200, 8, generator=g) + 1.5 * nn.functional.one_hot(train_y, 8)
    eval_x = torch.randn(80, 8, generator=g) + 1.5 * nn.functional.one_hot(eval_y, 8)
    ref = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(train_x.numpy(), train_y.numpy())
    assert float(knn_accuracy(train_x, train_y, eval_x, eval_y)) == pytest.approx(ref.score(eval_x.numpy(), eval_y.numpy()))


def test_linear_probe_recovers_separable_labels():
    g = torch.Generator().manual_seed(6)
    y = torch.arange(300) % 3
    x = torch.randn(300, 5, generator=g) + 8 * nn.functional.one_hot(y, 5)
    assert float(linear_probe_accuracy(x[:200], y[:200], x[200:], y[200:])) == 1.0
    noise = torch.randn(300, 5, generator=g)
    assert float(linear_probe_accuracy(noise[:200], y[:200], noise[200:], y[200:])) < 0.6


def test_representation_metrics_merge_halves_exactly():
    a, b = _features(90, 6, 7).float(), _features(90, 5, 8).float()
    y = torch.arange(90) % 3
    whole, halves = LinearCKA(), LinearCKA()
    whole.update(a, b, "forget", index=torch.arange(90))
    halves.update(a[40:], b[40:], "forget", index=torch.arange(40, 90))
    halves.update(a[:40], b[:40], "forget", index=torch.arange(40))
    assert torch.equal(whole.compute()["forget"], halves.compute()["forget"])
    probe, split_probe = FeatureProbe(), FeatureProbe()
    for metric, parts in ((probe, [slice(0, 90)]), (split_probe, [slice(50, 90), slice(0, 50)])):
        for part in parts:
            index = torch.arange(90)[part]
            metric.update(a[part], y[part], "train", index=index)
            metric.update(a[part] + 0.1, y[part], "forget", index=index)
    assert probe.compute() == split_probe.compute()


def test_default_feature_layers():
    cnn = SmallCNN(1, 10, width=4)
    assert resolve_feature_layer(cnn)[:1] == ("classifier",) and resolve_feature_layer(cnn)[2]
    logits, feats = forward_with_features(cnn, torch.zeros(3, 1, 8, 8))
    assert logits.shape == (3, 10) and feats.shape == (3, 16)
    resnet = ResNet18(1, 10, width=4)
    with feature_tap(resnet) as read:
        resnet.eval()(torch.zeros(2, 1, 16, 16))
    assert read().shape == (2, 32)
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.resnet18(num_classes=3)
    with feature_tap(tv) as read:
        tv.eval()(torch.zeros(1, 3, 32, 32))
    assert read().shape == (1, 512)  # avgpool, flattened: the input of fc
    assert resolve_feature_layer(cnn, "features")[2] is False
    with pytest.raises(ValueError, match="no submodule"):
        resolve_feature_layer(cnn, "nope")
