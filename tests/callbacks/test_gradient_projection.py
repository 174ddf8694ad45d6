"""GradientProjection, the adapter: the closed form through a trainer on toys where g_r and g_f are
known, the retain bound, masks, BatchNorm, resume, digits, and bad input (the projection itself is
tested without a trainer in tests/functional/test_projection.py)."""

import copy
import itertools

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn.callbacks import GradientProjection, MaskedUpdateCallback
from lightning_unlearn.data.samplers import SeededBatchSampler
from lightning_unlearn.methods import RandomLabel
from tests.conftest import quiet_trainer
from tests.functional.test_projection import closed_form


# ---------------------------------------------------------------------------------- the retain stream
def test_seeded_batches_resume_at_any_batch():
    full = SeededBatchSampler(10, 3, seed=1)
    first = [b for _, b in zip(range(8), full)]
    assert all(len(b) == 3 for b in first)
    assert len(set(itertools.chain.from_iterable(first[:3]))) == 9  # a pass: 3 full batches of distinct examples, 1 left out
    resumed = [b for _, b in zip(range(3), SeededBatchSampler(10, 3, seed=1, start=5))]
    assert resumed == first[5:8]
    ranks = [[b for _, b in zip(range(4), SeededBatchSampler(10, 3, seed=1, stride=2, offset=r))] for r in (0, 1)]
    assert ranks[0] == first[0:8:2] and ranks[1] == first[1:8:2]  # DDP ranks: disjoint shares of one stream


# ---------------------------------------------------------------------------------- the callback on toys
class Toy(L.LightningModule):
    """Two parameter tensors, logits ``x[:, :2] * a + x[:, 2:] * b``; the training loss is linear,
    ``<c_a, a> + <c_b, b>``, so the forgetting gradient is exactly ``(c_a, c_b)``."""

    def __init__(self, c_a, c_b, lr=0.1, manual=False):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([0.3, -0.2]))
        self.b = nn.Parameter(torch.tensor([0.1, 0.4]))
        self.c_a, self.c_b, self.lr, self.automatic_optimization = torch.tensor(c_a), torch.tensor(c_b), lr, not manual

    def forward(self, x):
        return x[:, :2] * self.a + x[:, 2:] * self.b

    def training_step(self, batch, batch_idx):
        loss = (self.c_a * self.a).sum() + (self.c_b * self.b).sum()
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def retain_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > x[:, 1]).long())


def retain_grad(toy, data):
    x, y = data.tensors
    loss = F.cross_entropy(toy(x), y)
    return [g.detach() for g in torch.autograd.grad(loss, [toy.a, toy.b])]


def conflicting(g):
    """``-2 g`` plus a component orthogonal to ``g`` (a 2-vector)."""
    return -2 * g + torch.stack([-g[1], g[0]])


def one_step(toy, callback):
    trainer = quiet_trainer(max_steps=1, callbacks=[callback])
    trainer.fit(toy, train_dataloaders=DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=4))
    return trainer


@pytest.mark.parametrize("manual", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.05])
def test_callback_update_equals_closed_form(eps, manual):
    data = retain_data()
    toy = Toy([0.0, 0.0], [0.0, 0.0], manual=manual)
    theta0 = [toy.a.detach().clone(), toy.b.detach().clone()]
    g_r = retain_grad(toy, data)
    toy.c_a, toy.c_b = conflicting(g_r[0]), conflicting(g_r[1])
    g_f = [toy.c_a.clone(), toy.c_b.clone()]
    expected_d, lam = closed_form(g_f, g_r, eps)
    assert lam > 0  # the toy conflicts
    trainer = one_step(toy, GradientProjection(tolerance=eps, dataloader=DataLoader(data, batch_size=16)))
    step = torch.cat([theta0[0] - toy.a.detach(), theta0[1] - toy.b.detach()]).double()
    torch.testing.assert_close(step, toy.lr * expected_d, rtol=1e-5, atol=1e-7)
    first_order_change = -(torch.cat(g_r).double() @ step)
    assert first_order_change <= toy.lr * eps + 1e-6
    assert trainer.callback_metrics["gradient_projection/fired"] == 1.0
    assert trainer.callback_metrics["gradient_projection/lambda"].item() == pytest.approx(lam.item(), rel=1e-5)


def test_callback_leaves_agreeing_gradients_alone():
    data = retain_data()
    toy = Toy([0.0, 0.0], [0.0, 0.0])
    g_r = retain_grad(toy, data)
    toy.c_a, toy.c_b = 2 * g_r[0], 2 * g_r[1]  # the forgetting gradient agrees with the retain one
    theta0 = [toy.a.detach().clone(), toy.b.detach().clone()]
    trainer = one_step(toy, GradientProjection(dataloader=DataLoader(data, batch_size=16)))
    torch.testing.assert_close(theta0[0] - toy.a.detach(), toy.lr * toy.c_a)
    torch.testing.assert_close(theta0[1] - toy.b.detach(), toy.lr * toy.c_b)
    assert trainer.callback_metrics["gradient_projection/fired"] == 0.0


def test_non_finite_gradients_are_a_no_op():
    toy = Toy([float("nan"), 1.0], [0.0, 1.0])
    callback = GradientProjection(dataloader=DataLoader(retain_data(), batch_size=16))
    one_step(toy, callback)
    assert callback.batches_drawn == 0


def test_every_n_steps_draws_one_retain_batch_per_projected_step():
    callback = GradientProjection(every_n_steps=3, dataloader=DataLoader(retain_data(), batch_size=4))
    trainer = quiet_trainer(max_steps=7, callbacks=[callback])
    trainer.fit(Toy([-1.0, 2.0], [0.5, -1.5]), train_dataloaders=DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=1))
    assert callback.batches_drawn == 3  # steps 0, 3, 6


class FixedMask(MaskedUpdateCallback):
    """Only the first entry of each tensor may change."""

    def build_masks(self, trainer, pl_module, named):
        masks = [torch.zeros_like(p, dtype=torch.bool) for _, p in named]
        for m in masks:
            m.view(-1)[0] = True
        return masks


@pytest.mark.parametrize("mask_first", [True, False])
def test_projection_runs_in_the_masked_subspace(mask_first):
    data = retain_data()
    toy = Toy([0.0, 0.0], [0.0, 0.0])
    g_r_a, g_r_b = retain_grad(toy, data)
    toy.c_a, toy.c_b = conflicting(g_r_a), conflicting(g_r_b)
    theta0 = torch.cat([toy.a.detach(), toy.b.detach()])
    g_r = torch.cat([g_r_a, g_r_b]).double()
    keep = torch.tensor([True, False, True, False])
    projection = GradientProjection(dataloader=DataLoader(data, batch_size=16))
    callbacks = [FixedMask(), projection] if mask_first else [projection, FixedMask()]
    trainer = quiet_trainer(max_steps=1, callbacks=callbacks)
    trainer.fit(toy, train_dataloaders=DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=4))
    step = (theta0 - torch.cat([toy.a.detach(), toy.b.detach()])).double()
    assert (step[~keep] == 0).all()  # frozen entries never move
    expected, lam = closed_form([torch.cat([toy.c_a, toy.c_b]) * keep], [g_r * keep], 0.0)
    assert lam > 0
    torch.testing.assert_close(step, toy.lr * expected, rtol=1e-5, atol=1e-7)
    assert -(g_r @ step) <= 1e-7  # the bound holds for the update actually applied


def test_salun_mask_plus_projection_on_digits(original, digits_classwise):
    from lightning_unlearn.callbacks import SaliencyMask

    initial = copy.deepcopy(original.state_dict())
    mask = SaliencyMask(threshold=0.5)
    method = RandomLabel(original, alpha=0.0, lr=0.05, momentum=0.0, epoch_split="forget")
    quiet_trainer(max_epochs=2, callbacks=[mask, GradientProjection()]).fit(method, datamodule=digits_classwise)
    masks = mask.masks()
    for name, value in method.model.named_parameters():
        if name in masks:
            assert torch.equal(value.detach()[~masks[name]], initial[name][~masks[name]]), name
    assert accuracy(method.model, digits_classwise.forget_dataloader()) < 0.3


# ---------------------------------------------------------------------------------- on digits
def accuracy(model, loader):
    model.eval()
    with torch.no_grad():
        return torch.cat([(model(x).argmax(-1) == y).float() for x, y in loader]).mean().item()


def test_retain_pass_does_not_touch_batchnorm_statistics(original, digits_classwise):
    def buffers_after(callbacks):
        L.seed_everything(0)
        method = RandomLabel(copy.deepcopy(original), alpha=0.0, lr=0.0, momentum=0.0, weight_decay=0.0)
        quiet_trainer(max_steps=2, callbacks=callbacks).fit(method, datamodule=digits_classwise)
        return dict(method.model.named_buffers())

    plain, projected = buffers_after([]), buffers_after([GradientProjection()])
    for name, value in plain.items():
        assert torch.equal(projected[name], value), name


def test_forgetting_with_projection_keeps_retain_accuracy(original, digits_classwise):
    def unlearn(callbacks):
        L.seed_everything(0)  # forgetting loss only; retained data enters through the projection
        method = RandomLabel(
            copy.deepcopy(original), alpha=0.0, lr=0.1, momentum=0.0, epoch_split="forget", exclude_true_label=True
        )
        quiet_trainer(max_epochs=2, callbacks=callbacks).fit(method, datamodule=digits_classwise)
        return accuracy(method.model, digits_classwise.forget_dataloader()), accuracy(
            method.model, digits_classwise.retain_dataloader()
        )

    forget, retain = unlearn([GradientProjection()])
    _, retain_unprojected = unlearn([])
    assert forget < 0.1 and retain > 0.9
    assert retain > retain_unprojected + 0.03  # here about 0.96 vs 0.89


def test_resume_is_exact(original, digits_classwise, tmp_path):
    def run(epochs, ckpt=None, save=None):
        L.seed_everything(0)
        method = RandomLabel(copy.deepcopy(original), alpha=0.0, lr=0.01)
        callback = GradientProjection(scope="layer")
        trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=2, callbacks=[callback])
        trainer.fit(method, datamodule=digits_classwise, ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return method, callback

    straight, cb_straight = run(2)
    run(1, save=tmp_path / "mid.ckpt")
    resumed, cb_resumed = run(2, ckpt=tmp_path / "mid.ckpt")
    assert cb_resumed.batches_drawn == cb_straight.batches_drawn == 4
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tolerance=-0.1), "`tolerance` must be a finite number >= 0, got -0.1: it is eps"),
        (dict(tolerance=float("nan")), "`tolerance` must be a finite number >= 0"),
        (dict(scope="neuron"), "`scope` must be one of \\('global', 'layer'\\), got 'neuron'"),
        (dict(reference="forget"), "`reference` must be one of \\('retain',\\), got 'forget'"),
        (dict(every_n_steps=0), "`every_n_steps` must be an integer >= 1, got 0: 1 projects every step"),
        (dict(dataloader=[1, 2]), "`dataloader` must be a torch DataLoader"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradientProjection(**kwargs)


def test_missing_retain_data_fails_before_any_weight_change():
    toy = Toy([-1.0, 2.0], [0.5, -1.5])
    state = copy.deepcopy(toy.state_dict())
    with pytest.raises(ValueError, match=r"GradientProjection needs retained data.*dataloader="):
        one_step(toy, GradientProjection())
    assert all(torch.equal(state[k], v) for k, v in toy.state_dict().items())
