"""Mixed precision for the bi-level step: forwards under autocast, perturbation in float32.

theta+- = theta +- eps v is formed in the float32 master buffer; the forward then rounds the
weights to the compute dtype. With eps v tiny against theta, theta+ and theta- can round to the
same bfloat16 values, and the finite difference sees nothing: :func:`collapsed_fraction` measures
that, and the caller warns and points to the exact ``jvp`` mode.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from bfdkern.bilevel.rng import capturing

LOW_PRECISION = (torch.bfloat16, torch.float16)


def check_amp_dtype(amp_dtype: torch.dtype | None) -> None:
    """Only bfloat16 autocast: float16 needs loss scaling, which the bi-level step does not do."""
    if amp_dtype is None or amp_dtype == torch.bfloat16:
        return
    if amp_dtype == torch.float16:
        raise ValueError(
            "amp_dtype=torch.float16 needs gradient scaling, which the bi-level step does not do; "
            "use torch.bfloat16 (same range as float32) or None"
        )
    raise ValueError(f"amp_dtype must be None or torch.bfloat16, got {amp_dtype}")


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` with ``amp_dtype``, or a no-op when it is None. Without the
    weight-cast cache while a CUDA graph is captured (cached casts would outlive the graph's memory)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype, cache_enabled=not capturing(device))


def effective_dtype(param_dtype: torch.dtype, amp_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype the weights take inside the forward: the autocast dtype, else the parameters'."""
    return amp_dtype if amp_dtype is not None else param_dtype


def collapsed_fraction(pair: Tensor, dtype: torch.dtype) -> Tensor:
    """0-dim: the fraction of perturbed entries (theta+ != theta-) whose two values round to the
    same ``dtype`` value. ``pair`` [2, N] in the master dtype. 0 when nothing is perturbed."""
    moved = pair[0] != pair[1]
    same = pair[0].to(dtype) == pair[1].to(dtype)
    n = moved.sum()
    return (moved & same).sum().to(torch.float32) / n.clamp(min=1).to(torch.float32)
