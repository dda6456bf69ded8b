"""Chance level of each pretext task: the loss of the best predictor that does not look at the image.

A task is learned when its loss falls below this. The predictor outputs one constant logit vector for
every sample, fitted to the very targets it is scored on (so the bar is, if anything, slightly too
high): for a categorical or binary task that is about the class prior; an ordinal task's pairwise
ranking loss is the same for every constant score (all pairs tie), the loss of zero logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bfdkern.ops import multitask_loss
from bfdkern.tasks import TaskSpec

LEARNED_MARGIN = 0.05
"""A task counts as learned when its loss is at least this fraction below its chance level (a hair's
difference is noise)."""


def is_learned(loss: float, chance: float) -> bool:
    """Whether ``loss`` is clearly below ``chance`` (by :data:`LEARNED_MARGIN` of it); False when unknown."""
    return bool(loss < (1 - LEARNED_MARGIN) * chance)


def _mean_losses(logits_row: Tensor, batches: Sequence[Tensor], spec: TaskSpec) -> Tensor:
    per = [multitask_loss(logits_row.expand(t.shape[0], -1), t, spec)[0] for t in batches]
    return torch.stack(per).mean(0)


def chance_losses(target_batches: Sequence[Tensor], spec: TaskSpec, max_iter: int = 50) -> Tensor:
    """Per-task chance level [K] (float64) on ``target_batches`` (each [B, J], NaN = missing).

    The value is the mean over the batches of the per-task loss (as training reports it, batch by batch)
    of the best constant logits (L-BFGS from zero logits), never above the zero-logit loss. NaN for a task
    with no label in any batch.
    """
    batches = [t.detach().to("cpu", torch.float64) for t in target_batches if t.shape[0] > 0]
    if not batches:
        raise ValueError("chance_losses needs at least one non-empty target batch")
    for t in batches:
        if t.dim() != 2 or t.shape[1] != spec.num_targets:
            raise ValueError(f"target batches must be [B, J={spec.num_targets}], got {tuple(t.shape)}")
    zero = torch.zeros(spec.num_columns, dtype=torch.float64)
    with torch.no_grad():
        at_zero = _mean_losses(zero, batches, spec)
    # L-BFGS on all batches pooled (one loss call an evaluation), then a few steps on the exact objective.
    row = zero.clone().requires_grad_(True)
    for group, iters in (([torch.cat(batches)], max_iter), (batches, 10)):
        opt = torch.optim.LBFGS([row], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe", tolerance_change=1e-9)

        def closure(group=group, opt=opt):
            opt.zero_grad()
            loss = _mean_losses(row, group, spec).sum()  # tasks use disjoint columns: each is minimised alone
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        fitted = _mean_losses(row.detach(), batches, spec)
        best = torch.where(torch.isfinite(fitted), torch.minimum(fitted, at_zero), at_zero)
    labelled = torch.stack([(~torch.isnan(t)).any(0) for t in batches]).any(0)
    has_label = torch.tensor([bool(labelled[spec.target_columns(k)].any()) for k in range(spec.num_tasks)])
    return torch.where(has_label, best, torch.full_like(best, float("nan")))
