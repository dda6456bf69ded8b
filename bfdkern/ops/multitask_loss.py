"""``multitask_loss``: the per-task weighted pretext loss, one registered op on every backend.

``bfdkern::multitask_loss`` is a ``torch.library`` custom op (schema, fake kernel, autograd).
Its forward returns the per-task loss vector and the weighted total; its backward takes the
upstream gradient of the whole K-vector (plus that of the total), so a caller may backpropagate
sum_k lambda_k l_k with a new lambda through a kept graph. The fused backends are differentiable
once: when a backward runs with ``create_graph=True`` (a double backward) the gradient is
recomputed through the reference ops, which are twice differentiable.

Forward mode (``torch.func.jvp``, ``torch.autograd.forward_ad``). Task k owns its logit columns
alone, so d l_k / d z is zero outside them and one backward with a ones upstream vector gives every
task's gradient at once: G = sum_k d l_k / d z. The tangent of the per-task vector along z_dot is
then the per-task segmented sum of G * z_dot (see :mod:`bfdkern.ops.forward_mode`), at the cost of
a backward. ``torch.library`` has no forward-mode registration for custom ops (and the autograd
kernel of ``custom_op``'s ``register_autograd`` drops tangents: a zero tangent, silently), so the
registered op is defined with the low-level API and its Autograd kernel applies an
``autograd.Function`` that carries the rule, as the eager path does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bfdkern.ops import backends, dispatch, forward_mode, reference
from bfdkern.ops.backends import Backend
from bfdkern.ops.validate import check_loss_inputs
from bfdkern.tasks import KernelLayout, TaskSpec


def _forward_impl(logits, targets, weights, layout, backend: Backend):
    """The backend's forward on contiguous inputs, weights in the compute dtype."""
    dtype = reference.compute_dtype(logits.dtype)
    return backend.loss_forward(logits.contiguous(), targets.contiguous(), weights.to(dtype).contiguous(), layout)


def _backward_impl(grad_per_task, logits, targets, layout, backend: Backend) -> Tensor:
    """The backend's d(per_task . grad_per_task)/d logits, in the logits' dtype."""
    dtype = reference.compute_dtype(logits.dtype)
    grad = backend.loss_backward(
        grad_per_task.to(dtype).contiguous(), logits.contiguous(), targets.contiguous(), layout
    )
    return grad.to(logits.dtype)


# The registered op, defined through the low-level API: custom_op's register_autograd kernel skips
# autograd when no input requires grad, which drops forward-mode tangents (a zero tangent, silently).
# Its Autograd kernel below applies an autograd.Function with a jvp instead. torch.func's grad and
# jvp cannot enter an autograd.Function applied inside an op's Autograd kernel: they get an error.
_LIB = torch.library.Library("bfdkern", "FRAGMENT")
REGISTERED_OP_TRANSFORM_ERROR = (
    "bfdkern::multitask_loss: torch.func.grad / jvp cannot differentiate the registered op (torch.library "
    "has no rule for them); call bfdkern.multitask_loss outside torch.compile, whose eager path carries "
    "backward, forward-mode and vmap rules (torch.autograd and torch.autograd.forward_ad do work here)"
)
_LIB.define(
    "multitask_loss(Tensor logits, Tensor targets, Tensor weights, int[] kinds, int[] col_offsets, "
    "int[] col_counts, int[] target_offsets, float[] gammas, float sigma, float delta, str backend) "
    "-> (Tensor, Tensor)"
)


@torch.library.impl(_LIB, "multitask_loss", "CompositeExplicitAutograd")
def _multitask_loss_kernel(
    logits, targets, weights, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta, backend
):
    layout = KernelLayout.of(kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta)
    return _forward_impl(logits, targets, weights, layout, dispatch.ensure_loaded(backend, logits.device))


@torch.library.register_fake("bfdkern::multitask_loss", lib=_LIB)
def _(logits, targets, weights, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta, backend):
    dtype = reference.compute_dtype(logits.dtype)
    return logits.new_empty((len(kinds),), dtype=dtype), logits.new_empty((), dtype=dtype)


_multitask_loss_op = torch.ops.bfdkern.multitask_loss.default


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
    layout = KernelLayout.of(kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta)
    return _backward_impl(grad_per_task, logits, targets, layout, dispatch.ensure_loaded(backend, logits.device))


@_multitask_loss_backward_op.register_fake
def _(grad_per_task, logits, targets, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta, backend):
    return torch.empty_like(logits)


def _registered_backward(grad_per_task, logits, targets, layout, backend: Backend) -> Tensor:
    """The backward kernel of the registered op's autograd: the registered backward op."""
    return _multitask_loss_backward_op(grad_per_task, logits, targets, *layout, backend.name)


def _save(ctx, inputs, output, backward_kernel) -> None:
    """What backward and jvp need: the tensors, the layout, the backend and the backward kernel
    (``backward_kernel(grad_per_task, logits, targets, layout, backend)``)."""
    logits, targets, weights, layout, backend = inputs
    tensors = (logits, targets, weights, output[0])
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)
    ctx.layout, ctx.backend, ctx.backward_kernel = layout, backend, backward_kernel


def _backward(ctx, grad_per_task, grad_total):
    """(grad_logits, None, grad_weights, None, None) from the upstream K-vector and scalar; the
    backward of the registered op's autograd and of the eager fast path."""
    logits, targets, weights, per_task = ctx.saved_tensors
    k = per_task.shape[0]
    g = grad_per_task if grad_per_task is not None else per_task.new_zeros(k)
    if grad_total is not None:
        g = g + grad_total * weights.to(g.dtype)
    grad_logits = grad_weights = None
    if ctx.needs_input_grad[0]:
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the reference so the result is differentiable again
            # (torch.func.vjp: also under an outer torch.func transform, e.g. torch.func.hessian).
            spec = TaskSpec.from_layout(ctx.layout)
            ref, vjp = torch.func.vjp(lambda x: reference.per_task_losses(x, targets, spec), logits)
            (grad_logits,) = vjp(g.to(ref.dtype))
        else:
            grad_logits = ctx.backward_kernel(g, logits, targets, ctx.layout, ctx.backend)
    if ctx.needs_input_grad[2] and grad_total is not None:
        grad_weights = (grad_total * per_task).to(weights.dtype)
    return grad_logits, None, grad_weights, None, None


def _per_task_tangent(logits, targets, logits_t, layout, backend: Backend, backward_kernel) -> Tensor:
    """[K] d per_task along logits_t: the segmented sum of G * logits_t with G = sum_k d l_k / d
    logits, from the backend's backward with a ones upstream vector; or, where the tangent must stay
    differentiable (and for the reference backend), G from the reference ops through torch.func.vjp,
    which composes with every transform."""
    forward_mode.check_single_forward_level()
    dtype = reference.compute_dtype(logits.dtype)
    plain = None if backend.name == "reference" else forward_mode.kernel_operands(logits, targets, logits_t)
    if plain is not None:
        logits, targets, logits_t = plain
        with forward_mode.outside_transforms():
            ones = torch.ones(len(layout.kinds), dtype=dtype, device=logits.device)
            grad = backward_kernel(ones, logits, targets, layout, backend)
            return forward_mode.segmented_tangent(grad, logits_t, layout.col_counts, dtype)
    spec = TaskSpec.from_layout(layout)
    per_task, vjp = torch.func.vjp(lambda x: reference.per_task_losses(x, targets, spec), logits)
    (grad,) = vjp(torch.ones_like(per_task))
    return forward_mode.segmented_tangent(grad, logits_t, layout.col_counts, dtype)


def _jvp(ctx, logits_t, targets_t, weights_t, spec_t, backend_t):
    """(per_task_dot [K], total_dot []) along the logits' and weights' tangents (either may be
    None); the targets are labels, with no tangent. total_dot = sum_k w_dot_k l_k + w_k l_dot_k.
    The forward-mode rule of the registered op's autograd and of the eager fast path."""
    logits, targets, weights, per_task = ctx.saved_tensors
    if logits_t is None:
        per_task_t = torch.zeros_like(per_task)
    else:
        per_task_t = _per_task_tangent(logits, targets, logits_t, ctx.layout, ctx.backend, ctx.backward_kernel)
    total_t = (weights.to(per_task.dtype) * per_task_t).sum()
    if weights_t is not None:
        total_t = total_t + (weights_t.to(per_task.dtype) * per_task).sum()
    return per_task_t, total_t


class _RegisteredLoss(torch.autograd.Function):
    """Autograd (backward and jvp) of ``bfdkern::multitask_loss``; its forward is the op below
    autograd, so that torch.compile sees the op and its backward op."""

    @staticmethod
    def forward(logits, targets, weights, layout, backend: Backend):
        with torch._C._AutoDispatchBelowAutograd():
            return _multitask_loss_op(logits, targets, weights, *layout, backend.name)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs, output, _registered_backward)

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)


@torch.library.impl(_LIB, "multitask_loss", "Autograd")
def _multitask_loss_autograd(
    logits, targets, weights, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta, backend
):
    if forward_mode.differentiating_transform_active():
        raise RuntimeError(REGISTERED_OP_TRANSFORM_ERROR)
    layout = KernelLayout.of(kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta)
    return _RegisteredLoss.apply(logits, targets, weights, layout, backends.BY_NAME[backend])


class _EagerMultitaskLoss(torch.autograd.Function):
    """The same computation, autograd and forward-mode rule as ``bfdkern::multitask_loss``,
    without the Python dispatcher round trips of a registered op (about 0.1-1 ms a call, more than
    the kernels take). Used in eager mode; under torch.compile the registered op is used."""

    @staticmethod
    def forward(logits, targets, weights, layout, backend: Backend):
        return _forward_impl(logits, targets, weights, layout, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs, output, _backward_impl)

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)

    @staticmethod
    def vmap(info, in_dims, logits, targets, weights, layout, backend):
        """vmap: one call per slice (the kernels take one batch of B rows)."""
        dims = in_dims[:3]

        def pick(t, d, i):
            return t if d is None else t.select(d, i)

        rows = [
            _EagerMultitaskLoss.apply(
                *(pick(t, d, i) for t, d in zip((logits, targets, weights), dims)), layout, backend
            )
            for i in range(info.batch_size)
        ]
        return (torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])), (0, 0)


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
    if torch.compiler.is_compiling():
        return _multitask_loss_op(logits, targets, weights, *spec.layout, chosen.name)
    return _EagerMultitaskLoss.apply(logits, targets, weights, spec.layout, chosen)
