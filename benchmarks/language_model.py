"""The README's language-model example, measured: a tiny causal LM trained on the embedded text with
planted secrets, then unlearned with NPO and gradient ascent, with and without SaliencyMask +
GradientProjection.

    python -m benchmarks.language_model --out results/language_model.json

Runs the README's two code blocks as written (training, then NPO + the callbacks), then the other
rows on copies of the same trained model. Reported: exact-match extraction of the secrets and
perplexity on the secrets, the retained text and the held-out text.
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import lightning as L

from benchmarks.common import QUIET, emit
from lightning_unlearn.callbacks import GradientProjection, SaliencyMask
from lightning_unlearn.methods import NPO, GradientAscent
from lightning_unlearn.metrics import exact_match_extraction, perplexity

README = Path(__file__).resolve().parents[1] / "README.md"


def run() -> tuple[dict, str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text().split("## Beyond class labels")[1], re.S)[:2]
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    lm, dm = namespace["lm"], namespace["dm"]
    probes = dm.extraction_probes()

    def scores(model) -> dict:
        return {
            "extraction": exact_match_extraction(model, probes),
            "forget_ppl": perplexity(model, dm.forget_dataloader()),
            "retain_ppl": perplexity(model, dm.retain_dataloader()),
            "test_ppl": perplexity(model, dm.test_dataloader()),
        }

    rows = {"trained LM": scores(lm)}
    readme = {**namespace, "lm": copy.deepcopy(lm)}
    exec(compile(blocks[1], "README.md", "exec"), readme)
    rows["NPO (beta 0.1, lr 0.01, 3 epochs) + SaliencyMask + GradientProjection"] = scores(readme["npo"].model)
    for name, make, epochs, callbacks in [
        ("NPO (beta 0.1, lr 0.01, 3 epochs), no callbacks", lambda m: NPO(m, beta=0.1, lr=0.01, momentum=0.0), 3, False),
        (
            "GradientAscent (lr 0.02, 5 epochs) + SaliencyMask + GradientProjection",
            lambda m: GradientAscent(m, lr=0.02, momentum=0.0),
            5,
            True,
        ),
        ("GradientAscent (lr 0.02, 5 epochs), no callbacks", lambda m: GradientAscent(m, lr=0.02, momentum=0.0), 5, False),
    ]:
        L.seed_everything(0)
        method = make(copy.deepcopy(lm))
        extra = [SaliencyMask(threshold=0.5), GradientProjection()] if callbacks else []
        L.Trainer(**QUIET, max_epochs=epochs, callbacks=extra).fit(method, datamodule=dm)
        rows[name] = scores(method.model)
    table = (
        "| | extraction (exact match) | perplexity on the secrets | on the retained text | on held-out text |\n"
        "|---|---:|---:|---:|---:|\n"
    )
    for name, r in rows.items():
        table += (
            f"| {name} | {100 * r['extraction']:.0f} % | {r['forget_ppl']:.2f} | {r['retain_ppl']:.3f} | {r['test_ppl']:.3f} |\n"
        )
    return {"rows": rows, "parameters": sum(p.numel() for p in lm.parameters())}, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result, table = run()
    emit("language_model", result, table, args.out)


if __name__ == "__main__":
    main()
