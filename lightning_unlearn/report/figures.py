"""Pictures of an audit, as PNG files beside the report: membership-score histograms, ROC curves,
margin distributions against the reference, accuracy bars.

matplotlib is optional (the ``test`` and ``bench`` extras): it is imported inside
:func:`write_figures`, through ``matplotlib.figure.Figure`` only (no pyplot, so a user's
backend and open figures are never touched); without it :func:`write_figures` raises
``ImportError`` and the evaluation callback warns once and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor

from lightning_unlearn.metrics.functional.attacks import ATTACK_PAIRS, THRESHOLD_ATTACKS, attack_scores, roc_curve
from lightning_unlearn.metrics.keys import GAP_METRICS

__all__ = ["FIGURES", "write_figures"]

#: The figures :func:`write_figures` draws, by name (the PNG file is ``<stem>_<name>.png``).
FIGURES: tuple[str, ...] = ("mia_scores", "roc", "margins", "accuracy")
_SPLIT_COLOURS = {"forget": "tab:red", "retain": "tab:blue", "test": "tab:green"}
_MODEL_COLOURS = {"after": "tab:red", "reference": "tab:green", "before": "tab:grey", "reseeded": "tab:olive"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=80, layout="constrained")


#: Each attack's score on a readable scale (a monotone map of the score: the same ranking).
_SCALES = {
    "loss": ("log10 loss (left = member)", lambda st: torch.log10((-st["log_p"]).clamp_min(1e-12))),
    "confidence": ("logit-scaled confidence (right = member)", lambda st: st["margin"].clamp(-30, 30)),
    "entropy": ("log10 entropy (left = member)", lambda st: torch.log10(st["entropy"].clamp_min(1e-12))),
    "modified_entropy": (
        "log10 modified entropy (left = member)",
        lambda st: torch.log10(st["modified_entropy"].clamp_min(1e-12)),
    ),
}


def _score_histograms(samples: Mapping[str, Mapping[str, Tensor]], title: str) -> Any:
    fig = _figure(13, 3.2)
    axes = fig.subplots(1, len(THRESHOLD_ATTACKS))
    for ax, attack in zip(axes, THRESHOLD_ATTACKS):
        label, scale = _SCALES[attack]
        scores = {split: scale({k: v.double() for k, v in samples[split].items()}) for split in _SPLIT_COLOURS}
        pooled = torch.cat(list(scores.values()))
        low, high = float(torch.quantile(pooled, 0.005)), float(torch.quantile(pooled, 0.995))
        bins = torch.linspace(low, high if high > low else low + 1, 41).tolist()
        for split, values in scores.items():
            ax.hist(
                values.clamp(low, high).numpy(), bins=bins, density=True, alpha=0.45, color=_SPLIT_COLOURS[split], label=split
            )
        ax.set_title(f"{attack} attack", fontsize=9)
        ax.set_xlabel(label, fontsize=8)
        ax.set_yticks([])
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def _roc(samples: Mapping[str, Mapping[str, Tensor]], title: str) -> Any:
    fig = _figure(9, 4)
    axes = fig.subplots(1, 2)
    for ax, (pair, (member, non_member)) in zip(axes, ATTACK_PAIRS.items()):
        for attack in THRESHOLD_ATTACKS:
            m = attack_scores({k: v.double() for k, v in samples[member].items()}, attack)
            n = attack_scores({k: v.double() for k, v in samples[non_member].items()}, attack)
            fpr, tpr, _ = roc_curve(m, n)
            if fpr.numel() > 600:  # the figure cannot show more operating points than that
                keep = torch.linspace(0, fpr.numel() - 1, 600).round().long()
                fpr, tpr = fpr[keep], tpr[keep]
            ax.plot(fpr.clamp_min(1e-4).numpy(), tpr.numpy(), label=attack, linewidth=1.2)
        ax.plot([1e-4, 1], [1e-4, 1], color="black", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(1e-3, 1)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title(pair.replace("_", " "), fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def _margins(margins: Mapping[str, Mapping[str, Tensor]], title: str) -> Any:
    splits = [s for s in ("forget", "test") if any(s in m for m in margins.values())]
    fig = _figure(5 * len(splits), 3.4)
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, split in zip(axes, splits):
        values = {name: m[split].double().clamp(-30, 30) for name, m in margins.items() if split in m}
        low = min(float(v.min()) for v in values.values())
        high = max(float(v.max()) for v in values.values())
        bins = torch.linspace(low, high if high > low else low + 1, 51).tolist()
        for name, v in values.items():
            ax.hist(
                v.numpy(), bins=bins, density=True, histtype="step", linewidth=1.4, color=_MODEL_COLOURS.get(name), label=name
            )
        ax.set_xlabel("margin z_y - logsumexp_{j != y} z_j (clipped to +-30)")
        ax.set_title(f"{split} set", fontsize=9)
        ax.set_yticks([])
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def _accuracy(blocks: Mapping[str, Optional[Mapping[str, Any]]], title: str) -> Any:
    keys = ["forget_acc", *GAP_METRICS]
    shown = {name: block for name, block in blocks.items() if block}
    fig = _figure(8, 3.4)
    ax = fig.subplots()
    width = 0.8 / max(len(shown), 1)
    for i, (name, block) in enumerate(shown.items()):
        heights = [100.0 * float(block.get(k) or 0.0) for k in keys]
        ax.bar([j + i * width for j in range(len(keys))], heights, width, label=name, color=_MODEL_COLOURS.get(name))
    ax.set_xticks([j + width * (len(shown) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels(["forget acc", *GAP_METRICS.values()], fontsize=8)
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def write_figures(
    stem: Union[str, Path],
    *,
    samples: Optional[Mapping[str, Mapping[str, Tensor]]] = None,
    margins: Optional[Mapping[str, Mapping[str, Tensor]]] = None,
    metrics: Optional[Mapping[str, Optional[Mapping[str, Any]]]] = None,
    title: str = "",
    figures: Sequence[str] = FIGURES,
) -> dict[str, Path]:
    """Draws the audit figures and saves them as ``<stem>_<name>.png``.

    Args:
        stem: path prefix, e.g. ``"artifacts/report"`` for ``artifacts/report_roc.png``.
        samples: the unlearned model's per-sample statistics per split (``EvaluationPass.samples``)
            for ``mia_scores`` and ``roc``.
        margins: ``{model name: {split: (N,) margins}}`` (``after``, ``reference``, ``before``) for ``margins``.
        metrics: ``{model name: metrics block}`` for ``accuracy``.
        title: a line on every figure.
        figures: which to draw (those without their data are skipped).

    Returns:
        ``{name: path}`` of the files written.

    Raises:
        ImportError: matplotlib is not installed (``pip install "lightning-unlearn[bench]"``).
    """
    import matplotlib  # noqa: F401  (raises ImportError when absent)

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # each maker runs only when its data is given (non-empty)
    drawn_samples, drawn_margins, drawn_metrics = samples or {}, margins or {}, metrics or {}
    makers = {
        "mia_scores": (samples, lambda: _score_histograms(drawn_samples, title)),
        "roc": (samples, lambda: _roc(drawn_samples, title)),
        "margins": (margins, lambda: _margins(drawn_margins, title)),
        "accuracy": (metrics, lambda: _accuracy(drawn_metrics, title)),
    }
    written = {}
    for name in figures:
        data, make = makers[name]
        if not data:
            continue
        path = stem.parent / f"{stem.name}_{name}.png"
        make().savefig(path)
        written[name] = path
    return written
