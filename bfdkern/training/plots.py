"""Plots of a run from its log: the lambda trajectory per task, and the per-task losses against their
chance levels (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bfdkern.figures import pyplot, save_figure
from bfdkern.tasks import TaskSpec

LAMBDA_PLOT = "lambda.png"
LOSS_PLOT = "losses.png"


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` steps (shorter at the start); NaNs are skipped."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    n = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    count = n[idx] - n[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (c[idx] - c[lo]) / np.maximum(count, 1), np.nan)


def plot_lambdas(log: dict[str, np.ndarray], spec: TaskSpec, path: str | os.PathLike) -> Path:
    """lambda_k against the step, one line per task (outer tasks drawn thicker)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    steps = log["step"]
    cmap = plt.get_cmap("tab20")
    for k, task in enumerate(spec.tasks):
        outer = k in spec.outer_indices
        ax.plot(
            steps,
            log[f"lambda_{task.name}"],
            lw=2.2 if outer else 1.2,
            color=cmap(k % 20),
            label=task.name + (" (l_1)" if outer else ""),
        )
    ax.set_xlabel("step")
    ax.set_ylabel("lambda")
    ax.set_title("task weights lambda (bi-level)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return save_figure(fig, path)


def plot_losses(
    log: dict[str, np.ndarray], spec: TaskSpec, path: str | os.PathLike, chance: np.ndarray | None = None
) -> Path:
    """Per-task training loss against the step (raw and smoothed), one panel per task, with the task's chance
    level (the best constant prediction) as a dashed line when given."""
    plt = pyplot()
    k = spec.num_tasks
    cols = min(4, k)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False, sharex=True)
    steps = log["step"]
    window = max(1, len(steps) // 20)
    for i, (ax, task) in enumerate(zip(axes.flat, spec.tasks)):
        loss = log[f"loss_{task.name}"]
        ax.plot(steps, loss, lw=0.6, alpha=0.35, color="C0")
        ax.plot(steps, smooth(loss, window), lw=1.5, color="C0", label="loss")
        if chance is not None and np.isfinite(chance[i]):
            ax.axhline(chance[i], color="C3", lw=1, ls="--", label="chance")
        ax.set_title(task.name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle("per-task training loss (B_tr, before each update)")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.9, wspace=0.3, hspace=0.35)
    return save_figure(fig, path, tight=False)
