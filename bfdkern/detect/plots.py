"""Plots of detection results (matplotlib, Agg backend, PNG files): ROC curves, score histograms with the
threshold always on the axis, every metric of several detectors side by side, robustness under perturbations,
and the fits' own figures (one-class score histogram, binary validation curve)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from bfdkern.detect.metrics import METRIC_KEYS, METRIC_LABELS, roc_auc, roc_curve
from bfdkern.figures import pyplot, save_figure


def _readable_ticks(ax, axis: str = "x", integer: bool = False) -> None:
    """At most 6 round ticks, plain numbers (no offset or scientific notation the reader must decode)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator  # lazy: heavy (matplotlib), only when a figure is drawn

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10], integer=integer))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, *, title: str = "ROC") -> Path:
    """One ROC curve per generator, fake = positive class, with the 5% and 1% false-alarm lines.

    Args:
        curves: name -> (real fakeness [Nr], fake fakeness [Nf]), higher = more fake.
        path: the PNG to write.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 5))
    for name, (real, fake) in curves.items():
        labels = np.r_[np.zeros(len(real)), np.ones(len(fake))]
        scores = np.r_[real, fake]
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {100 * roc_auc(labels, scores):.1f})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="chance")
    for rate in (0.01, 0.05):
        ax.axvline(rate, color="0.8", lw=0.8, ls=":")
    ax.set_xlabel("false-alarm rate (reals called fake)")
    ax.set_ylabel("detection rate (fakes called fake)")
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
    """The real images' scores against each generator's, one panel per generator, with the decision threshold.

    ``real_scores`` is one array or real source name -> array (each source its own outline). The x axis always
    reaches the threshold, however far it is from the scores (a threshold off the scores is itself the finding),
    with plain, round ticks."""
    plt = pyplot()
    reals = real_scores if isinstance(real_scores, dict) else {"real": real_scores}
    reals = {n: np.asarray(s, dtype=np.float64) for n, s in reals.items()}
    names = list(fake_scores) or ["(none)"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    pooled = np.concatenate(list(reals.values()))
    for ax, name in zip(axes.flat, names):
        fake = np.asarray(fake_scores.get(name, []), dtype=np.float64)
        both = np.concatenate([pooled, fake])
        lo, hi = np.percentile(both, [0.5, 99.5]) if len(both) > 20 else (both.min(), both.max())
        if threshold is not None and np.isfinite(threshold):
            lo, hi = min(lo, threshold), max(hi, threshold)
        pad = 0.04 * (hi - lo) if hi > lo else 0.5
        lo, hi = lo - pad, hi + pad
        bins = np.linspace(lo, hi, 41)
        for real_name, real in reals.items():
            label = f"{real_name} ({len(real)})"
            if len(reals) == 1:
                ax.hist(np.clip(real, lo, hi), bins=bins, alpha=0.55, density=True, label=label)
            else:
                ax.hist(np.clip(real, lo, hi), bins=bins, density=True, histtype="step", lw=1.4, label=label)
        if len(fake):
            ax.hist(np.clip(fake, lo, hi), bins=bins, alpha=0.55, density=True, label=f"{name} ({len(fake)})")
        if threshold is not None and np.isfinite(threshold):
            ax.axvline(threshold, color="k", lw=1.2, ls="--", label=f"threshold {threshold:,.4g}")
        ax.set_xlim(lo, hi)
        _readable_ticks(ax)
        ax.set_xlabel(score_name)
        ax.set_ylabel("density")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _metric_panels(metrics, width_each: float):
    """A figure with one panel per metric (3 a row), room on the right for the legend: (plt, fig, axes)."""
    plt = pyplot()
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    size = (width_each * cols + 1.8, 3.0 * rows)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    return plt, fig, axes


def _finish_panels(fig, axes, metrics, title: str, path) -> Path:
    """Panel titles and percent axes, the unused panels off, one legend outside the panels, saved."""
    for ax, metric in zip(axes.flat, metrics):
        ax.set_ylim(-2, 102)
        ax.set_ylabel("%")
        ax.set_title(METRIC_LABELS[metric] + (" (lower is better)" if metric == "eer" else ""), fontsize=10)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="method", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path, tight=False)


def plot_comparison(
    values: dict[str, dict[str, dict[str, float]]],
    path: str | os.PathLike,
    *,
    metrics=METRIC_KEYS,
    title: str = "detectors compared",
) -> Path:
    """Every metric of several methods, one panel per metric: grouped bars per generator (the mean last), one
    colour per method, the legend outside the bars.

    Args:
        values: method -> generator -> metric -> fraction in [0, 1].
    """
    methods = list(values)
    generators = list(dict.fromkeys(g for v in values.values() for g in v))
    plt, fig, axes = _metric_panels(metrics, max(3.6, 0.5 + 0.28 * len(generators) * max(1, len(methods))))
    x = np.arange(len(generators))
    bar = 0.8 / max(1, len(methods))
    cmap = plt.get_cmap("tab10")
    for ax, metric in zip(axes.flat, metrics):
        for i, method in enumerate(methods):
            heights = [100 * values[method].get(g, {}).get(metric, np.nan) for g in generators]
            ax.bar(x - 0.4 + bar * (i + 0.5), heights, width=bar, color=cmap(i % 10), label=method)
        ax.set_xticks(x, generators, rotation=30, ha="right", fontsize=8)
        if metric in ("auc", "acc", "ap_fake", "ap_real", "eer"):
            ax.axhline(50, color="0.6", lw=0.8, ls="--")
        if len(generators) > 1:
            ax.axvline(len(generators) - 1.5, color="0.7", lw=0.8)  # the mean apart from the generators
    return _finish_panels(fig, axes, metrics, title, path)


def plot_robustness(
    values: dict[str, dict[str, dict[str, float]]],
    path: str | os.PathLike,
    *,
    metrics=METRIC_KEYS,
    title: str = "robustness (mean over generators)",
) -> Path:
    """Each metric against the perturbation (the clean one first), one line per method, the legend outside.

    Args:
        values: method -> perturbation -> metric -> fraction in [0, 1] (mean over generators).
    """
    conditions = list(dict.fromkeys(c for v in values.values() for c in v))
    _, fig, axes = _metric_panels(metrics, max(3.6, 1.0 + 0.55 * len(conditions)))
    x = np.arange(len(conditions))
    for ax, metric in zip(axes.flat, metrics):
        for method, by_condition in values.items():
            ys = [100 * by_condition.get(c, {}).get(metric, np.nan) for c in conditions]
            ax.plot(x, ys, marker="o", lw=1.4, label=method)
        ax.set_xticks(x, conditions, rotation=30, ha="right", fontsize=8)
    return _finish_panels(fig, axes, metrics, title, path)


def plot_fit_scores(
    fit_scores, calibration_scores, threshold: float, path: str | os.PathLike, *, rate: float, title: str
) -> Path:
    """The one-class fit: the fit set's log-likelihoods and the calibration set's (when held out), with the
    threshold (always on the axis)."""
    scores = {"fit set": fit_scores}
    if calibration_scores is not None:
        scores["calibration (held out)"] = calibration_scores
    return plot_histograms(
        scores,
        {f"threshold at {rate:.0%} false alarms": np.zeros(0)},
        path,
        threshold=threshold,
        score_name="log-likelihood",
        title=title,
    )


def plot_validation_curve(history: list[dict], best_epoch: int, path: str | os.PathLike, *, title: str) -> Path:
    """The binary fit: training and validation loss, and validation AUC and balanced accuracy, per epoch, with
    the kept (best) epoch marked."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [h["epoch"] for h in history]
    train = [np.nan if h["train_loss"] is None else h["train_loss"] for h in history]
    ax.plot(epochs, train, label="training loss")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax2.plot(epochs, [100 * h["val_auc"] for h in history], label="validation AUC")
    ax2.plot(epochs, [100 * h["val_balanced_acc"] for h in history], label="validation balanced accuracy")
    for a in (ax, ax2):
        a.axvline(best_epoch, color="k", lw=1, ls="--", label=f"kept: epoch {best_epoch}")
        a.set_xlabel("epoch")
        a.legend(fontsize=8)
        _readable_ticks(a, integer=True)
    ax.set_ylabel("class-balanced cross-entropy")
    ax2.set_ylabel("%")
    ax2.set_ylim(0, 100)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
