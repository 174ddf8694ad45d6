"""Oracle matching with the oracle = Retrain on digits: the KL to the oracle on D_f goes toward 0
(the KL of the softmax outputs, averaged over D_f; KLoM over model populations:
tests/benchmark/test_population.py)."""

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_unlearn.benchmark import MethodSpec, run_row
from lightning_unlearn.methods import OracleMatching, Retrain
from lightning_unlearn.metrics import evaluate
from lightning_unlearn.metrics.functional import avg_gap
from tests.conftest import quiet_trainer


@torch.no_grad()
def mean_kl_to(oracle, model, loader):
    oracle.eval(), model.eval()
    total, count = 0.0, 0
    for x, _ in loader:
        total += float(F.kl_div(F.log_softmax(model(x), 1), F.log_softmax(oracle(x), 1), log_target=True, reduction="sum"))
        count += len(x)
    return total / count


@pytest.fixture(scope="module")
def retrained(original_digits_model, tmp_path_factory):
    from lightning_unlearn.data import DigitsDataModule, ForgetSpec

    L.seed_everything(0)
    method = Retrain(copy.deepcopy(original_digits_model), lr=0.05)
    quiet_trainer(max_epochs=15).fit(method, datamodule=DigitsDataModule(forget=ForgetSpec(classes=[3])))
    return method.model.eval()


def test_matching_the_retrain_oracle_drives_the_kl_toward_zero(original, digits_classwise, retrained):
    before = mean_kl_to(retrained, original, digits_classwise.forget_dataloader())
    L.seed_everything(0)
    method = OracleMatching(copy.deepcopy(original), oracle=retrained, lr=0.002)
    quiet_trainer(max_epochs=5).fit(method, datamodule=digits_classwise)
    after = mean_kl_to(retrained, method.model, digits_classwise.forget_dataloader())
    assert before > 3.0 and after < 0.1 * before, (before, after)
    metrics, reference = evaluate(method.model, digits_classwise), evaluate(retrained, digits_classwise)
    assert avg_gap(metrics, reference) < 0.02 and metrics["forget_acc"] < 0.05


def test_the_runner_binds_oracle_reference(original, digits_classwise, retrained, tmp_path):
    spec = MethodSpec("oracle_matching", max_epochs=1, init_args={"oracle": "reference", "lr": 0.002})
    run = run_row(spec, original, digits_classwise, seed=0, reference=retrained)
    assert run.method._teachers["oracle"] is not None and run.after["forget_acc"] < 1.0
    path = tmp_path / "oracle.pt"
    torch.save(retrained.state_dict(), path)
    from_path = OracleMatching(copy.deepcopy(original), oracle=str(path))
    x = next(iter(digits_classwise.forget_dataloader()))[0]
    torch.testing.assert_close(from_path.oracle_logits(x), retrained(x))


def test_unbound_reference_oracle_fails_before_any_step(original, digits_classwise):
    method = OracleMatching(copy.deepcopy(original))
    with pytest.raises(ValueError, match="has no reference"):
        quiet_trainer(max_steps=1).fit(method, datamodule=digits_classwise)
    with pytest.raises(ValueError, match="needs an `oracle`"):
        OracleMatching(copy.deepcopy(original), oracle=None)
