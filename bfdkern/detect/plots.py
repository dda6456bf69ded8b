"""Plots of detection results: ROC curves and score histograms (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bfdkern.detect.metrics import roc_curve
from bfdkern.figures import pyplot, save_figure


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    *,
    positive_class: str,
    title: str = "ROC",
) -> Path:
    """One ROC curve per generator on one axes.

    Args:
        curves: name -> (labels [N] with 1 = ``positive_class``, scores [N]).
        path: the PNG to write.
        positive_class: named in the axis labels ("real" or "fake").
    """
    from bfdkern.detect.metrics import roc_auc

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {100 * roc_auc(labels, scores):.1f})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="chance")
    negative = "fake" if positive_class == "real" else "real"
    ax.set_xlabel(f"false-positive rate ({negative} called {positive_class})")
    ax.set_ylabel(f"true-positive rate ({positive_class} called {positive_class})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_histograms(
    real_scores,
    fake_scores: dict[str, np.ndarray],
    path: str | os.PathLike,
    *,
    threshold: float | None,
    score_name: str,
    title: str = "scores",
) -> Path:
    """Histogram of the real images' scores against each generator's, one panel per generator, with the
    decision threshold as a vertical line."""
    plt = pyplot()
    names = list(fake_scores)
    cols = min(3, max(1, len(names)))
    rows = (max(1, len(names)) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    real = np.asarray(real_scores, dtype=np.float64)
    for ax, name in zip(axes.flat, names):
        fake = np.asarray(fake_scores[name], dtype=np.float64)
        both = np.concatenate([real, fake])
        lo, hi = np.percentile(both, [0.5, 99.5]) if len(both) > 20 else (both.min(), both.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        ax.hist(np.clip(real, lo, hi), bins=bins, alpha=0.55, density=True, label=f"real ({len(real)})")
        ax.hist(np.clip(fake, lo, hi), bins=bins, alpha=0.55, density=True, label=f"{name} ({len(fake)})")
        if threshold is not None and lo <= threshold <= hi:
            ax.axvline(threshold, color="k", lw=1, ls="--", label="threshold")
        ax.set_xlabel(score_name)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)
