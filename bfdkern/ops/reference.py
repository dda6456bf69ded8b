"""Pure-PyTorch reference implementations: the oracle for every kernel and the
twice-differentiable fallback (hypergradient mode ``unroll`` and forward-mode ``jvp`` run here).

They materialise what the fused kernels avoid (the B x B pair matrix) and favour clarity.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bfdkern.tasks import TaskSpec

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Loss arithmetic runs in float64 for float64 inputs, else float32 (half types upcast)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def ordinal_scores(z: Tensor) -> Tensor:
    """[B, L] ordinal logits -> [B] scores: the column itself (L = 1) or the expected level
    sum_k k * softmax_k (L > 1)."""
    if z.shape[1] == 1:
        return z[:, 0]
    levels = torch.arange(z.shape[1], dtype=z.dtype, device=z.device)
    return (torch.softmax(z, dim=1) * levels).sum(dim=1)


def thurstone_fidelity_loss(s: Tensor, y: Tensor, sigma: float, delta: float) -> Tensor:
    """Mean over valid pairs i<j of 1 - sqrt(p g + d) - sqrt((1-p)(1-g) + d), with
    p = Phi((s_i - s_j)/sigma) and g = 1, 0, 0.5 for y_i >, <, = y_j. 0 without a valid pair."""
    present = ~torch.isnan(y)
    diff = (s[:, None] - s[None, :]) / sigma
    # Phi(x) and 1 - Phi(x) both through erfc: no cancellation when |x| is large.
    p = 0.5 * torch.erfc(-diff * _SQRT_HALF)
    q = 0.5 * torch.erfc(diff * _SQRT_HALF)
    yi, yj = y[:, None], y[None, :]
    g = torch.where(yi > yj, 1.0, torch.where(yi < yj, 0.0, 0.5)).to(s.dtype)
    loss = 1.0 - torch.sqrt(p * g + delta) - torch.sqrt(q * (1.0 - g) + delta)
    b = s.shape[0]
    upper = torch.ones(b, b, dtype=torch.bool, device=s.device).triu(1)
    mask = upper & present[:, None] & present[None, :]
    count = mask.sum()
    return torch.where(mask, loss, 0.0).sum() / count.clamp(min=1).to(s.dtype)


def fidelity_from_logprob(log_py: Tensor, gamma: float) -> Tensor:
    """(1 - p_y)^gamma * (1 - sqrt(p_y)) from log p_y; sqrt and 1 - p as exp / expm1 of the log
    so that the gradient stays finite when p_y underflows."""
    loss = 1.0 - torch.exp(0.5 * log_py)
    if gamma != 0.0:
        loss = (-torch.expm1(log_py)) ** gamma * loss
    return loss


def _masked_mean(values: Tensor, present: Tensor) -> Tensor:
    count = present.sum()
    return torch.where(present, values, 0.0).sum() / count.clamp(min=1).to(values.dtype)


def categorical_fidelity_loss(z: Tensor, y: Tensor, gamma: float) -> Tensor:
    """Softmax fidelity loss with focal factor, mean over labelled samples. z [B, C], y [B]."""
    present = ~torch.isnan(y)
    idx = torch.where(present, y, 0.0).long()
    log_py = torch.log_softmax(z, dim=1).gather(1, idx[:, None])[:, 0]
    return _masked_mean(fidelity_from_logprob(log_py, gamma), present)


def multilabel_fidelity_loss(z: Tensor, y: Tensor, gamma: float) -> Tensor:
    """Per-column sigmoid fidelity loss, mean over labelled (sample, column) cells. z, y [B, R]."""
    present = ~torch.isnan(y)
    sign = torch.where(present & (y > 0.5), 1.0, -1.0).to(z.dtype)
    log_py = torch.nn.functional.logsigmoid(sign * z)
    return _masked_mean(fidelity_from_logprob(log_py, gamma), present)


def per_task_losses(logits: Tensor, targets: Tensor, spec: TaskSpec) -> Tensor:
    """[B, C] logits, [B, J] targets -> [K] per-task losses (compute dtype)."""
    dtype = compute_dtype(logits.dtype)
    z_all = logits.to(dtype)
    y_all = targets.to(dtype)
    out = []
    for k, task in enumerate(spec.tasks):
        z = z_all[:, spec.columns(k)]
        y = y_all[:, spec.target_columns(k)]
        if task.kind == "ordinal":
            out.append(thurstone_fidelity_loss(ordinal_scores(z), y[:, 0], spec.sigma, spec.delta))
        elif task.kind in ("categorical", "binary"):
            out.append(categorical_fidelity_loss(z, y[:, 0], task.gamma))
        else:
            out.append(multilabel_fidelity_loss(z, y, task.gamma))
    return torch.stack(out)


def multitask_loss(logits: Tensor, targets: Tensor, weights: Tensor, spec: TaskSpec) -> tuple[Tensor, Tensor]:
    """Reference fused loss: (per_task [K], total = sum_k weights_k * per_task_k)."""
    per_task = per_task_losses(logits, targets, spec)
    total = (weights.to(per_task.dtype) * per_task).sum()
    return per_task, total


def trusted_sum_of_squares(n: int, dtype: torch.dtype) -> float:
    """The least sum of squares of n values, accumulated in ``dtype``, that may be trusted: squares
    below the smallest normal number lose their digits, and n of them stay below a quarter of an
    ulp of any sum at least this large. Below it (or when the sum overflowed), ||v|| is recomputed
    scaled by max |v_i|."""
    info = torch.finfo(dtype)
    return max(n, 1) * 4.0 * info.tiny / info.eps


def usable_norm(norm: Tensor, radius: float) -> Tensor:
    """Bool []: eps = radius / norm can be formed in norm's dtype: norm is finite and normal (at
    least the smallest normal number; below it v's direction has lost its digits) and eps is finite."""
    tiny = torch.finfo(norm.dtype).tiny
    return torch.isfinite(norm) & (norm >= tiny) & torch.isfinite(radius / torch.where(norm > 0, norm, 1.0))


def perturb_pair(
    theta: Tensor, v: Tensor, radius: float = 0.01, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Paired finite-difference perturbation.

    ||v|| is the plain norm when its sum of squares can be trusted (:func:`trusted_sum_of_squares`),
    else max |v_i| ||v / max |v_i|||, so that a tiny or huge but representable v still gets its eps.

    Args:
        theta: [N] flat parameters (any float dtype; arithmetic in float32 or float64).
        v: [N] flat direction (the validation gradient at theta').
        radius: r in eps = r / ||v||.
        out: an optional [2, N] buffer in theta's dtype to write the result into.

    Returns:
        out [2, N] (theta + eps v, theta - eps v) in theta's dtype, eps (0-dim, compute dtype),
        nonfinite (0-dim bool): no eps could be formed although v is not zero: v holds a NaN or Inf,
        or ||v|| or r / ||v|| under- or overflows the compute dtype (:func:`usable_norm`). eps is 0
        (so out = (theta, theta)) then and when v is zero.
    """
    dtype = compute_dtype(theta.dtype)
    vv = v.to(dtype)
    plain = torch.linalg.vector_norm(vv)
    trusted = torch.isfinite(plain) & (plain * plain >= trusted_sum_of_squares(vv.numel(), dtype))
    scale = vv.abs().amax() if vv.numel() else plain  # NaN or inf when v holds one
    finite = torch.isfinite(scale)
    safe = torch.where(finite & (scale > 0), scale, 1.0)
    norm = torch.where(trusted, plain, safe * torch.linalg.vector_norm(vv / safe))
    ok = finite & usable_norm(norm, radius)
    nonfinite = ~ok & (scale != 0)
    eps = torch.where(ok, radius / torch.where(ok, norm, 1.0), 0.0)
    step = torch.where(ok, eps * vv, 0.0)  # also zeroes NaN entries of v when eps is 0
    t = theta.to(dtype)
    pair = torch.stack([t + step, t - step]).to(theta.dtype)
    if out is None:
        return pair, eps, nonfinite
    return out.copy_(pair), eps, nonfinite
