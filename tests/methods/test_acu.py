"""ACU on digits: the unlearned head equals the least-squares refit on D_r, also after a chain."""

import copy

import pytest
import torch

from lightning_unlearn.data import ForgetSpec, dataset_targets
from lightning_unlearn.functional import least_squares_head
from lightning_unlearn.methods import ACU
from lightning_unlearn.methods.acu import memory_of
from tests.conftest import quiet_trainer


def features(network, datamodule, split):
    captured = []
    hook = network.classifier.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
    network.eval()
    with torch.no_grad():
        for x, _ in datamodule.retain_dataloader() if split == "retain" else datamodule.forget_dataloader():
            network(x)
    hook.remove()
    targets = dataset_targets(datamodule.train_set)[datamodule.retain_indices if split == "retain" else datamodule.forget_indices]
    return torch.cat(captured).double(), targets


def head(network):
    return torch.cat([network.classifier.weight.T, network.classifier.bias[None]]).double()


def test_unlearned_head_equals_the_refit_on_retained_data_over_a_chain(original, digits_classwise):
    chain = [ForgetSpec(classes=[3]), ForgetSpec(ratio=0.1, seed=1), ForgetSpec(classes=[7])]
    model = original
    for k in range(len(chain)):
        data = digits_classwise.with_requests(chain, k)
        method = ACU(model, gamma=1.0)
        assert method.epoch_split == ("longest" if k == 0 else "forget")  # later requests read D_f only
        quiet_trainer(max_epochs=1).fit(method, datamodule=data)
        x, y = features(copy.deepcopy(method.model), data, "retain")
        torch.testing.assert_close(
            head(method.model), least_squares_head(x, y, 10, gamma=1.0).float().double(), rtol=0, atol=1e-5
        )
        assert memory_of(method.model).count == len(data.retain_indices)
        model = method.model
    # every requested class is forgotten exactly: its output column is 0, never the argmax for its images
    assert head(model)[:, 3].abs().max() < 1e-5 and head(model)[:, 7].abs().max() < 1e-5
    assert memory_of(original) is None  # the user's network is untouched


def test_memory_survives_a_checkpoint(original, digits_classwise, tmp_path):
    method = ACU(copy.deepcopy(original))
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(method, datamodule=digits_classwise)
    trainer.save_checkpoint(tmp_path / "acu.ckpt")
    restored = ACU(copy.deepcopy(original))
    restored.on_load_checkpoint(torch.load(tmp_path / "acu.ckpt", weights_only=False))
    torch.testing.assert_close(restored.memory.inverse_autocorrelation, method.memory.inverse_autocorrelation)


def test_a_head_without_bias_is_refused():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10, bias=False))
    with pytest.raises(ValueError, match="has no bias"):
        ACU(net)
