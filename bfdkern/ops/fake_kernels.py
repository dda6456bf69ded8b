"""Fake (meta) kernels of the compiled ops in ``torch.ops.bfdkern_C`` (csrc/registration.cpp).

The C++ schemas name this module (``set_python_module``), so torch imports it when it needs the
fake kernels; :mod:`bfdkern.ops.extension` imports it right after loading ``bfdkern._C``. With
them, ``torch.library.opcheck``, ``torch.compile`` and fake-tensor tracing see through the ops.
The loss ops' trailing arguments are a :class:`bfdkern.tasks.KernelLayout`, flattened.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bfdkern.ops.reference import compute_dtype
from bfdkern.tasks import KernelLayout


@torch.library.register_fake("bfdkern_C::multitask_loss_fwd")
def _multitask_loss_fwd(logits: Tensor, targets: Tensor, weights: Tensor, *layout):
    """per_task [K] and total [] in the compute dtype."""
    dtype = compute_dtype(logits.dtype)
    k = len(KernelLayout(*layout).kinds)
    return logits.new_empty((k,), dtype=dtype), logits.new_empty((), dtype=dtype)


@torch.library.register_fake("bfdkern_C::multitask_loss_bwd")
def _multitask_loss_bwd(grad_per_task: Tensor, logits: Tensor, targets: Tensor, *layout):
    """grad_logits [B, C] in the logits' dtype."""
    return logits.new_empty(logits.shape)


@torch.library.register_fake("bfdkern_C::perturb_pair")
def _perturb_pair(theta: Tensor, v, radius):
    """out [2, N] in theta's dtype, eps [] in the compute dtype, nonfinite [] bool."""
    return (
        theta.new_empty((2, theta.shape[0])),
        theta.new_empty((), dtype=compute_dtype(theta.dtype)),
        theta.new_empty((), dtype=torch.bool),
    )


@torch.library.register_fake("bfdkern_C::perturb_pair_out")
def _perturb_pair_out(theta: Tensor, v, radius, out):
    """eps [] in the compute dtype, nonfinite [] bool (out is written in place)."""
    return theta.new_empty((), dtype=compute_dtype(theta.dtype)), theta.new_empty((), dtype=torch.bool)
