"""Forward mode (JVP) of the fused loss from its backward: the pieces the rule in
:mod:`bfdkern.ops.multitask_loss` is made of.

Task k owns the logit columns ``col_offsets[k] : col_offsets[k] + col_counts[k]`` alone, so
d l_k / d z vanishes outside them and one backward with a ones upstream K-vector gives every task's
gradient in one [B, C] tensor G. The per-task tangent along z_dot is the segmented sum
l_dot_k = sum over rows and task k's columns of G * z_dot, done on the device without a host sync.

A custom ``autograd.Function``'s ``jvp`` runs on tensors that ``torch.func.jvp`` has wrapped at its
own level; a compiled kernel needs plain tensors. :func:`kernel_operands` strips that one level and
says when the result must stay differentiable (an outer ``torch.func.grad``, ``vmap`` or a graph being
recorded), where only the reference ops (through ``torch.func.vjp``) give a correct tangent; the
kernels then run in :func:`outside_transforms`, so that the tensors they create are plain too.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch._C import _functorch
from torch._functorch.pyfunctorch import TransformType, retrieve_all_functorch_interpreters

NESTED_FORWARD_ERROR = (
    "multitask_loss: forward-over-forward (a jvp of a jvp, e.g. a Hessian-vector product by two "
    "torch.func.jvp) is not supported through a custom autograd.Function in PyTorch; compute that "
    "loss with bfdkern.ops.reference.per_task_losses"
)


@functools.cache
def _owner_mask(col_counts: tuple[int, ...], device: torch.device) -> Tensor:
    """[C, K] bool: column c belongs to task k (built once per layout and device)."""
    with torch._C._DisableFuncTorch():  # a plain tensor, never one wrapped by the transform running
        owner = torch.repeat_interleave(torch.arange(len(col_counts)), torch.tensor(col_counts))
        return (owner[:, None] == torch.arange(len(col_counts))[None, :]).to(device)


def segmented_tangent(grad: Tensor, tangent: Tensor, col_counts, dtype: torch.dtype) -> Tensor:
    """[K] per-task sums of grad * tangent over rows and each task's columns, in ``dtype``.

    Args:
        grad: [B, C] sum_k d l_k / d z (a backward with a ones upstream vector).
        tangent: [B, C] z_dot.
        col_counts: columns per task, in packing order (they sum to C).
        dtype: the compute dtype of the losses.
    """
    columns = (grad.to(dtype) * tangent.to(dtype)).sum(0)
    mask = _owner_mask(tuple(int(n) for n in col_counts), columns.device)
    # where + sum, not a matmul: exact zeros, no TF32, a fixed summation order.
    return torch.where(mask, columns[:, None], 0.0).sum(0)


def check_single_forward_level() -> None:
    """Raise when a jvp rule runs under two torch.func.jvp levels: PyTorch does not carry the outer
    tangent through a custom autograd.Function's jvp (the result would be a silent zero)."""
    if sum(1 for i in retrieve_all_functorch_interpreters() if i.key() == TransformType.Jvp) > 1:
        raise NotImplementedError(NESTED_FORWARD_ERROR)


def differentiating_transform_active() -> bool:
    """A torch.func.grad / vjp / jvp transform is running (vmap alone is not)."""
    return any(i.key() in (TransformType.Grad, TransformType.Jvp) for i in retrieve_all_functorch_interpreters())


def outside_transforms():
    """A context in which new tensors are plain (functorch wraps what factories make under a
    transform): the kernels' outputs and scratch, for a caller holding plain operands."""
    return torch._C._DisableFuncTorch()


def kernel_operands(*tensors: Tensor) -> tuple[Tensor, ...] | None:
    """Inside a ``jvp`` rule: the tensors as a kernel can take them (the wrapper of the forward
    transform running the rule removed), or None when the tangent must itself be differentiable
    (an outer functorch transform, or autograd recording a graph through them)."""
    level = _functorch.maybe_current_level()
    plain = []
    for t in tensors:
        if level is not None:
            t = _functorch._unwrap_for_grad(t, level)
        if _functorch.is_functorch_wrapped_tensor(t):
            return None
        plain.append(t)
    if torch.is_grad_enabled() and any(t.requires_grad for t in plain):
        return None
    return tuple(plain)
