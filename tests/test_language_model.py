"""Beyond class labels: a tiny causal LM, trained here in seconds on an embedded text with planted
secrets, forgets them with gradient ascent and NPO, with SaliencyMask and GradientProjection
attached unchanged (the README's worked example runs as written)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_unlearn.callbacks import GradientProjection, SaliencyMask
from lightning_unlearn.data import SecretTextDataModule
from lightning_unlearn.data.text import decode, encode
from lightning_unlearn.functional import quantize_weights
from lightning_unlearn.methods import GradientAscent
from lightning_unlearn.metrics import exact_match_extraction, greedy_continuation, perplexity
from tests.conftest import quiet_trainer

README = Path(__file__).resolve().parents[1] / "README.md"
#: Retained-text perplexity may rise by at most this factor while the secrets are forgotten.
RETAIN_PERPLEXITY_BOUND = 1.25


def readme_blocks() -> list[str]:
    section = README.read_text().split("## Beyond class labels")[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[:2]


@pytest.fixture(scope="module")
def trained():
    """The README's first block: the LM trained on the text with its secrets (one run per session)."""
    namespace: dict = {}
    exec(compile(readme_blocks()[0], "README.md", "exec"), namespace)
    return namespace


def test_the_lm_memorises_the_secrets(trained):
    lm, dm = trained["lm"], trained["dm"]
    assert 100_000 < sum(p.numel() for p in lm.parameters()) < 300_000
    assert exact_match_extraction(lm, dm.extraction_probes()) == 1.0
    prompt, secret = dm.secret_prompts()[0]
    assert decode(greedy_continuation(lm, encode("^" + prompt), len(secret))) == secret


def test_npo_with_saliency_mask_and_gradient_projection_forgets_the_secrets(trained):
    """The README's second block: NPO + SaliencyMask + GradientProjection."""
    namespace = {**trained, "lm": copy.deepcopy(trained["lm"])}
    exec(compile(readme_blocks()[1], "README.md", "exec"), namespace)
    before, after = namespace["before"], namespace["after"]
    assert before[0] == 1.0 and after[0] == 0.0  # extraction: 100 % -> 0 %
    assert after[1] > 3 * before[1]  # the secrets became unlikely
    assert after[2] <= RETAIN_PERPLEXITY_BOUND * before[2], (before, after)
    # quantisation recovery check: int8 / int4 weights keep the trained LM's secrets (the check can
    # see them) and do not bring NPO's back
    probes = namespace["probes"]
    for bits in (8, 4):
        assert exact_match_extraction(quantize_weights(namespace["lm"], bits=bits), probes) == 1.0
        assert exact_match_extraction(quantize_weights(namespace["npo"].model, bits=bits), probes) == 0.0


def test_gradient_ascent_with_the_same_callbacks_forgets_the_secrets(trained):
    lm, dm = copy.deepcopy(trained["lm"]), trained["dm"]
    retain_before = perplexity(lm, dm.retain_dataloader())
    L.seed_everything(0)
    method = GradientAscent(lm, lr=0.02, momentum=0.0)
    quiet_trainer(max_epochs=5, callbacks=[SaliencyMask(threshold=0.5), GradientProjection()]).fit(method, datamodule=dm)
    assert exact_match_extraction(method.model, dm.extraction_probes()) == 0.0
    assert perplexity(method.model, dm.retain_dataloader()) <= RETAIN_PERPLEXITY_BOUND * retain_before


def test_text_datamodule_bookkeeping():
    dm = SecretTextDataModule(lines=20, secrets=3, copies=2, test_lines=5)
    assert len(dm.forget_indices) == 6 and len(dm.retain_indices) == 20
    x, y = dm.train_set[0]
    assert (
        x.shape == y.shape == (41,) and int((y == -100).sum()) > 0 and torch.equal(x[1:][y[:-1] != -100], y[:-1][y[:-1] != -100])
    )
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode("Hello!")
