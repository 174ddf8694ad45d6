"""SalUn's mask against a hand computation of the reference (OPTML-Group/Unlearn-Saliency
``Classification/generate_mask.py``): the rank procedure with ``int(len * ratio)`` entries, and the
saliency pass on the training-transformed forget images, as the reference reads them."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_unlearn.callbacks import SaliencyMask
from lightning_unlearn.data import ForgetSpec, UnlearningDataModule
from lightning_unlearn.functional import saliency_masks
from lightning_unlearn.methods import RandomLabel
from tests.callbacks.user_module import Tiny, forget_loader
from tests.conftest import quiet_trainer, synthetic_dataset

RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # the reference's threshold_list


def reference_masks(model, loader, ratio):
    """generate_mask.py, rewritten: eval mode; gradients[name] += grad of -CE per batch; abs;
    all = -cat(|G|); rank of each entry in argsort(all); keep rank < int(len(all) * ratio)."""
    model = copy.deepcopy(model).eval()
    gradients = {n: 0 for n, _ in model.named_parameters()}
    for x, y in loader:
        model.zero_grad()
        (-F.cross_entropy(model(x), y)).backward()
        for n, p in model.named_parameters():
            gradients[n] = gradients[n] + p.grad
    gradients = {n: g.abs() for n, g in gradients.items()}
    all_elements = -torch.cat([g.flatten() for g in gradients.values()])
    threshold_index = int(len(all_elements) * ratio)
    ranks = torch.argsort(torch.argsort(all_elements, stable=True), stable=True)
    masks, start = [], 0
    for g in gradients.values():
        masks.append((ranks[start : start + g.numel()] < threshold_index).reshape(g.shape))
        start += g.numel()
    return masks


@pytest.mark.parametrize("ratio", RATIOS)
def test_mask_equals_the_reference_rank_procedure(ratio):
    torch.manual_seed(0)
    net = Tiny()
    net.train()(torch.randn(32, 6))  # non-trivial BatchNorm statistics
    params = list(net.parameters())
    n = sum(p.numel() for p in params)  # 69: int(6.9) = 6 but round(6.9) = 7, int(20.7) = 20, ...
    ours = saliency_masks(net, params, forget_loader(), threshold=ratio)
    reference = reference_masks(net, forget_loader(), ratio)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))
    assert sum(int(m.sum()) for m in ours) == int(n * ratio)


def test_the_reference_keeps_int_not_round():
    n = sum(p.numel() for p in Tiny().parameters())
    assert any(int(n * r) != round(n * r) for r in RATIOS)  # the previous test can tell the two apart


class Augmented(Dataset):
    """A training view with random augmentation (Gaussian noise from torch's global generator)."""

    def __init__(self, base: TensorDataset) -> None:
        self.base, self.targets = base, base.tensors[1]

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x + 0.5 * torch.randn_like(x), y


def augmented_data():
    clean = synthetic_dataset(100)
    return UnlearningDataModule(
        Augmented(clean),
        synthetic_dataset(40, seed=1),
        forget=ForgetSpec(classes=[0]),
        batch_size=16,
        forget_batch_size=8,
        eval_batch_size=64,
        train_eval=clean,
    )


def saliency_mask_of(transforms, seed=0):
    torch.manual_seed(0)
    method = RandomLabel(Tiny(), lr=0.05)
    callback = SaliencyMask(threshold=0.3, transforms=transforms, seed=seed)
    quiet_trainer(max_steps=1, callbacks=[callback]).fit(method, datamodule=augmented_data())
    return callback, method


def test_saliency_reads_the_training_transforms_by_default():
    """Default: the forget images as the reference reads them (training transforms, training forget
    batch size), augmentations drawn from ``seed``; ``transforms="test"``: test-time images."""
    callback, method = saliency_mask_of("train")
    original = method.original_model
    dm = augmented_data()
    params = list(original.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        train_batches = list(DataLoader(dm.split("forget"), batch_size=8))
    expected = saliency_masks(original, params, train_batches, threshold=0.3)
    got = list(callback.masks().values())
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    test_view = saliency_masks(original, params, dm.forget_dataloader(), threshold=0.3)
    assert not all(torch.equal(a, b) for a, b in zip(expected, test_view))
    test_callback, _ = saliency_mask_of("test")
    assert all(torch.equal(a, b) for a, b in zip(test_callback.masks().values(), test_view))
    again, _ = saliency_mask_of("train")
    assert all(torch.equal(a, b) for a, b in zip(again.masks().values(), got))  # seeded: reproducible
    other_seed, _ = saliency_mask_of("train", seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(other_seed.masks().values(), got))


def test_unknown_transforms_is_refused():
    with pytest.raises(ValueError, match="`transforms` must be one of"):
        SaliencyMask(transforms="augmented")
