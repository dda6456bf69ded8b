"""``multitask_loss``: the per-task weighted pretext loss, one registered op on every backend.

``bfdkern::multitask_loss`` is a ``torch.library`` custom op (schema, fake kernel, autograd).
Its forward returns the per-task loss vector and the weighted total; its backward takes the
upstream gradient of the whole K-vector (plus that of the total), so a caller may backpropagate
sum_k lambda_k l_k with a new lambda through a kept graph. The fused backends are differentiable
once: when a backward runs with ``create_graph=True`` (a double backward) the gradient is
recomputed through the reference ops, which are twice differentiable.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from bfdkern.ops import dispatch, reference
from bfdkern.ops.validate import check_loss_inputs
from bfdkern.tasks import TaskSpec


def _backend_forward(backend, logits, targets, weights, kargs):
    if backend == "reference":
        spec = TaskSpec.from_kernel_args(**kargs)
        return reference.multitask_loss(logits, targets, weights, spec)
    if backend == "triton":
        from bfdkern.ops.kernels.triton import multitask_loss as triton_loss

        return triton_loss.forward(logits, targets, weights, **kargs)
    # cpp and cuda share one schema; the dispatcher picks the kernel by device.
    return tuple(torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, weights, *kargs.values()))


def _backend_backward(backend, grad_per_task, logits, targets, kargs) -> Tensor:
    if backend == "reference":
        spec = TaskSpec.from_kernel_args(**kargs)
        # torch.func works inside an op implementation, where the autograd keys are excluded.
        per_task, vjp = torch.func.vjp(lambda x: reference.per_task_losses(x, targets, spec), logits)
        return vjp(grad_per_task.to(per_task.dtype))[0]
    if backend == "triton":
        from bfdkern.ops.kernels.triton import multitask_loss as triton_loss

        return triton_loss.backward(grad_per_task, logits, targets, **kargs)
    return torch.ops.bfdkern_C.multitask_loss_bwd(grad_per_task, logits, targets, *kargs.values())


def _kargs(kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta) -> dict:
    return dict(
        kinds=kinds,
        col_offsets=col_offsets,
        col_counts=col_counts,
        target_offsets=target_offsets,
        gammas=gammas,
        sigma=sigma,
        delta=delta,
    )


def _forward_impl(logits, targets, weights, spec_args, backend):
    """The chosen backend's forward on contiguous inputs, weights in the compute dtype."""
    dtype = reference.compute_dtype(logits.dtype)
    return _backend_forward(
        backend, logits.contiguous(), targets.contiguous(), weights.to(dtype).contiguous(), _kargs(*spec_args)
    )


def _backward_impl(grad_per_task, logits, targets, *args) -> Tensor:
    """The chosen backend's d(per_task . grad_per_task)/d logits, in the logits' dtype."""
    *spec_args, backend = args
    dtype = reference.compute_dtype(logits.dtype)
    grad = _backend_backward(
        backend, grad_per_task.to(dtype).contiguous(), logits.contiguous(), targets.contiguous(), _kargs(*spec_args)
    )
    return grad.to(logits.dtype)


@torch.library.custom_op("bfdkern::multitask_loss", mutates_args=())
def _multitask_loss_op(
    logits: Tensor,
    targets: Tensor,
    weights: Tensor,
    kinds: list[int],
    col_offsets: list[int],
    col_counts: list[int],
    target_offsets: list[int],
    gammas: list[float],
    sigma: float,
    delta: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    dispatch.select(logits.device, backend)  # loads the extension; says why a backend cannot serve
    spec_args = (kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta)
    return _forward_impl(logits, targets, weights, spec_args, backend)


@_multitask_loss_op.register_fake
def _(logits, targets, weights, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta, backend):
    dtype = reference.compute_dtype(logits.dtype)
    return logits.new_empty((len(kinds),), dtype=dtype), logits.new_empty((), dtype=dtype)


@torch.library.custom_op("bfdkern::multitask_loss_backward", mutates_args=())
def _multitask_loss_backward_op(
    grad_per_task: Tensor,
    logits: Tensor,
    targets: Tensor,
    kinds: list[int],
    col_offsets: list[int],
    col_counts: list[int],
    target_offsets: list[int],
    gammas: list[float],
    sigma: float,
    delta: float,
    backend: str,
) -> Tensor:
    dispatch.select(logits.device, backend)
    spec_args = (kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta)
    return _backward_impl(grad_per_task, logits, targets, *spec_args, backend)


@_multitask_loss_backward_op.register_fake
def _(grad_per_task, logits, targets, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta, backend):
    return torch.empty_like(logits)


def _setup_context(ctx, inputs, output):
    logits, targets, weights, *spec_args, backend = inputs
    per_task, _ = output
    ctx.save_for_backward(logits, targets, weights, per_task)
    ctx.spec_args = spec_args
    ctx.backend = backend


def _input_grads(ctx, grad_per_task, grad_total, backward_kernel):
    """(grad_logits, grad_weights) from the upstream K-vector and scalar; shared by the registered
    op's autograd and the eager fast path."""
    logits, targets, weights, per_task = ctx.saved_tensors
    k = per_task.shape[0]
    g = grad_per_task if grad_per_task is not None else per_task.new_zeros(k)
    if grad_total is not None:
        g = g + grad_total * weights.to(g.dtype)
    grad_logits = grad_weights = None
    if ctx.needs_input_grad[0]:
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the reference so the result is differentiable again.
            spec = TaskSpec.from_kernel_args(**_kargs(*ctx.spec_args))
            ref = reference.per_task_losses(logits, targets, spec)
            (grad_logits,) = torch.autograd.grad(ref, logits, g.to(ref.dtype), create_graph=True)
        else:
            grad_logits = backward_kernel(g, logits, targets, *ctx.spec_args, ctx.backend)
    if ctx.needs_input_grad[2] and grad_total is not None:
        grad_weights = (grad_total * per_task).to(weights.dtype)
    return grad_logits, grad_weights


def _backward(ctx, grad_per_task, grad_total):
    grad_logits, grad_weights = _input_grads(ctx, grad_per_task, grad_total, _multitask_loss_backward_op)
    return (grad_logits, None, grad_weights) + (None,) * 8


_multitask_loss_op.register_autograd(_backward, setup_context=_setup_context)


def _eager_backward_kernel(g, logits, targets, *args):
    *spec_args, backend = args
    dtype = reference.compute_dtype(logits.dtype)
    return _backend_backward(
        backend, g.to(dtype).contiguous(), logits.contiguous(), targets.contiguous(), _kargs(*spec_args)
    ).to(logits.dtype)


class _EagerMultitaskLoss(torch.autograd.Function):
    """The same computation and autograd as ``bfdkern::multitask_loss``, without the Python
    dispatcher round trips of a custom op (about 0.1-1 ms a call, more than the kernels take).
    Used in eager mode; under torch.compile the registered op is used."""

    @staticmethod
    def forward(ctx, logits, targets, weights, spec_args, backend):
        per_task, total = _forward_impl(logits, targets, weights, spec_args, backend)
        ctx.save_for_backward(logits, targets, weights, per_task)
        ctx.spec_args, ctx.backend = spec_args, backend
        return per_task, total

    @staticmethod
    def backward(ctx, grad_per_task, grad_total):
        grad_logits, grad_weights = _input_grads(ctx, grad_per_task, grad_total, _backward_impl)
        return grad_logits, None, grad_weights, None, None


@functools.cache
def _spec_args(spec: TaskSpec) -> tuple:
    """The op's flat spec arguments (a spec is frozen and hashable: built once per spec)."""
    a = spec.kernel_args()
    return (a["kinds"], a["col_offsets"], a["col_counts"], a["target_offsets"], a["gammas"], a["sigma"], a["delta"])


def multitask_loss(
    logits: Tensor,
    targets: Tensor,
    spec: TaskSpec,
    weights: Tensor | None = None,
    *,
    backend: str | None = None,
    check_labels: bool = True,
) -> tuple[Tensor, Tensor]:
    """Per-task pretext losses and their weighted sum.

    Args:
        logits: [B, C] packed head outputs (C = ``spec.num_columns``).
        targets: [B, J] float targets, NaN = missing (see :mod:`bfdkern.tasks`).
        spec: the task spec.
        weights: [K] task weights lambda (default: ones).
        backend: ``reference`` | ``cpp`` | ``cuda`` | ``triton``; default by device.
        check_labels: validate label values (one host sync); shapes are always checked.

    Returns:
        per_task [K] and total = sum_k weights_k per_task_k, in float32 (float64 for float64 logits).
    """
    if weights is None:
        weights = torch.ones(spec.num_tasks, dtype=torch.float32, device=getattr(logits, "device", None))
    check_loss_inputs(logits, targets, weights, spec, labels=check_labels)
    chosen = dispatch.select(logits.device, backend)
    spec_args = _spec_args(spec)
    if torch.compiler.is_compiling():
        return _multitask_loss_op(logits, targets, weights, *spec_args, chosen)
    return _EagerMultitaskLoss.apply(logits, targets, weights, spec_args, chosen)
