"""Fake (meta) kernels of the compiled ops in ``torch.ops.bfdkern_C`` (csrc/registration.cpp).

The C++ schemas name this module (``set_python_module``), so torch imports it when it needs the
fake kernels; :mod:`bfdkern.ops.extension` imports it right after loading ``bfdkern._C``. With
them, ``torch.library.opcheck``, ``torch.compile`` and fake-tensor tracing see through the ops.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("bfdkern_C::multitask_loss_fwd")
def _multitask_loss_fwd(
    logits: Tensor, targets, weights, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta
):
    """per_task [K] and total [] in the compute dtype."""
    dtype = _compute_dtype(logits.dtype)
    return logits.new_empty((len(kinds),), dtype=dtype), logits.new_empty((), dtype=dtype)


@torch.library.register_fake("bfdkern_C::multitask_loss_bwd")
def _multitask_loss_bwd(
    grad_per_task, logits: Tensor, targets, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta
):
    """grad_logits [B, C] in the logits' dtype."""
    return logits.new_empty(logits.shape)


@torch.library.register_fake("bfdkern_C::perturb_pair")
def _perturb_pair(theta: Tensor, v, radius):
    """out [2, N] in theta's dtype, eps [] in the compute dtype, nonfinite [] bool."""
    return (
        theta.new_empty((2, theta.shape[0])),
        theta.new_empty((), dtype=_compute_dtype(theta.dtype)),
        theta.new_empty((), dtype=torch.bool),
    )


@torch.library.register_fake("bfdkern_C::perturb_pair_out")
def _perturb_pair_out(theta: Tensor, v, radius, out):
    """eps [] in the compute dtype, nonfinite [] bool (out is written in place)."""
    return theta.new_empty((), dtype=_compute_dtype(theta.dtype)), theta.new_empty((), dtype=torch.bool)
