"""The backend table: one frozen description per backend of the fused ops.

A backend says why it cannot serve tensors on a device (None when it can; asking loads its compiled
module), and gives the loss forward, the loss backward and the paired perturbation. The op bodies
(:mod:`bfdkern.ops.multitask_loss`, :mod:`bfdkern.ops.perturb`) call through the entry that
:func:`bfdkern.ops.dispatch.select` returns, so a new backend is one more entry here.

Every function takes contiguous tensors; the loss functions take the task layout as a
:class:`bfdkern.tasks.KernelLayout` and weights or upstream vectors already in the compute dtype
(float64 for float64 logits, else float32).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bfdkern.ops import extension, reference
from bfdkern.ops.kernels.triton import interpreting
from bfdkern.tasks import KernelLayout, TaskSpec


@dataclass(frozen=True)
class Backend:
    """One backend of the fused ops.

    Attributes:
        name: what ``backend=`` and ``$BFDKERN_BACKEND`` call it.
        why_not: device -> why this backend cannot serve tensors there, or None (loads its module).
        loss_forward: (logits [B, C], targets [B, J], weights [K], layout) -> (per_task [K], total []),
            in the compute dtype.
        loss_backward: (grad_per_task [K], logits, targets, layout) -> d (grad_per_task . per_task) /
            d logits [B, C].
        perturb: (theta [N], v [N], radius, out [2, N] or None) -> (out [2, N], eps [], nonfinite []).
        default_for: device types on which :func:`~bfdkern.ops.dispatch.select` picks it unasked
            (``"*"``: every device type).
        priority: among those, the lower is picked first (the fastest).
    """

    name: str
    why_not: Callable[[torch.device], str | None]
    loss_forward: Callable[..., tuple[Tensor, Tensor]]
    loss_backward: Callable[..., Tensor]
    perturb: Callable[..., tuple[Tensor, Tensor, Tensor]]
    default_for: tuple[str, ...]
    priority: int


# ---- reference: plain PyTorch, every device ------------------------------------------------------
def _reference_forward(logits, targets, weights, layout: KernelLayout):
    return reference.multitask_loss(logits, targets, weights, TaskSpec.from_layout(layout))


def _reference_backward(grad_per_task, logits, targets, layout: KernelLayout):
    spec = TaskSpec.from_layout(layout)
    # torch.func works inside an op implementation, where the autograd keys are excluded.
    per_task, vjp = torch.func.vjp(lambda x: reference.per_task_losses(x, targets, spec), logits)
    return vjp(grad_per_task.to(per_task.dtype))[0]


# ---- cpp and cuda: the compiled ops of bfdkern._C (one schema; the dispatcher picks by device) ----
def _compiled_forward(logits, targets, weights, layout):
    return tuple(torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, weights, *layout))


def _compiled_backward(grad_per_task, logits, targets, layout):
    return torch.ops.bfdkern_C.multitask_loss_bwd(grad_per_task, logits, targets, *layout)


def _compiled_perturb(theta, v, radius, out=None):
    if out is None:
        return tuple(torch.ops.bfdkern_C.perturb_pair(theta, v, radius))
    return (out, *torch.ops.bfdkern_C.perturb_pair_out(theta, v, radius, out))


def _cpp_why_not(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"the C++ kernels run on CPU tensors, got {device}"
    return extension.cpp_unavailable()


def _cuda_why_not(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the CUDA kernels run on CUDA tensors, got {device}"
    return extension.cuda_unavailable()


# ---- triton: imported on first use (importing triton costs a second) -----------------------------
@functools.cache
def _triton_missing() -> str | None:
    return "triton is not installed" if importlib.util.find_spec("triton") is None else None


def _triton_why_not(device: torch.device) -> str | None:
    reason = _triton_missing()
    if reason:
        return reason
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return None
    return f"Triton runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {device}"


def _triton_forward(logits, targets, weights, layout):
    from bfdkern.ops.kernels.triton import multitask_loss  # lazy: optional dependency (triton)

    return multitask_loss.forward(logits, targets, weights, layout)


def _triton_backward(grad_per_task, logits, targets, layout):
    from bfdkern.ops.kernels.triton import multitask_loss  # lazy: optional dependency (triton)

    return multitask_loss.backward(grad_per_task, logits, targets, layout)


def _triton_perturb(theta, v, radius, out=None):
    from bfdkern.ops.kernels.triton import perturb  # lazy: optional dependency (triton)

    return perturb.perturb_pair(theta, v, radius, out)


TABLE: tuple[Backend, ...] = (
    Backend("reference", lambda device: None, _reference_forward, _reference_backward, reference.perturb_pair,
            default_for=("*",), priority=9),
    Backend("cpp", _cpp_why_not, _compiled_forward, _compiled_backward, _compiled_perturb,
            default_for=("cpu",), priority=0),
    Backend("cuda", _cuda_why_not, _compiled_forward, _compiled_backward, _compiled_perturb,
            default_for=("cuda",), priority=0),
    Backend("triton", _triton_why_not, _triton_forward, _triton_backward, _triton_perturb,
            default_for=("cuda",), priority=1),
)  # fmt: skip
"""Every backend, in the order errors and :func:`~bfdkern.ops.dispatch.available` list them."""

BY_NAME: dict[str, Backend] = {b.name: b for b in TABLE}
BACKENDS: tuple[str, ...] = tuple(BY_NAME)


def picked_by_default(backend: Backend, device: torch.device) -> bool:
    """Whether ``backend`` is a candidate for tensors on ``device`` when none is requested."""
    return device.type in backend.default_for or "*" in backend.default_for
