"""The hypergradient d l_1(B_val; theta'(lambda)) / d lambda of the bi-level step, three ways.

With theta' = theta - alpha (grad_theta sum_k lambda_k l_k(B_tr; theta) + wd theta) and
v = grad_theta' l_1(B_val; theta'):

* ``fd`` (default; the paper's Eq. 18): -alpha (L(theta+) - L(theta-)) / (2 eps) with
  theta+- = theta +- eps v, eps = r / ||v||, L the per-task loss vector on B_tr. Both sides are
  evaluated together (:mod:`bfdkern.bilevel.paired_eval`). Error O(eps^2).
* ``jvp`` (exact): -alpha J(theta) v, one forward-mode pass (``torch.func.jvp``) through the
  reference loss (the fused ops have no forward-mode derivative).
* ``unroll`` (exact; the paper's Eq. 17): the gradient of l_1(theta'(lambda)) in lambda by a
  double backward through the virtual step (inner loss on the twice-differentiable reference).

The hypergradient is taken with respect to the task weights lambda as the loss sees them; a
trainer with a softplus or softmax parametrisation chains it to its raw parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from bfdkern.bilevel.choices import MODES
from bfdkern.bilevel.distributed import UNROLL_ERROR, DistributedSync
from bfdkern.bilevel.paired_eval import cloned_buffers, paired_losses
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.precision import LOW_PRECISION, autocast, check_amp_dtype, collapsed_fraction, effective_dtype
from bfdkern.bilevel.rng import RngState, replay
from bfdkern.bilevel.virtual_step import VirtualStep
from bfdkern.ops import multitask_loss, perturb_pair, reference
from bfdkern.ops.validate import check_loss_inputs
from bfdkern.tasks import TaskSpec


@dataclass
class InnerPass:
    """What the forward at theta on B_tr leaves behind.

    Attributes:
        per_task: [K] losses at theta; its graph is alive while a caller keeps it (reused forward).
        grads: grad_theta sum_k w_k l_k per layout parameter (with a graph in ``unroll`` mode).
        weights: [K] the weights w used; a leaf with ``requires_grad`` in ``unroll`` mode.
        rng_state: the random state the forward started from (replayed for dropout masks).
    """

    per_task: Tensor
    grads: list[Tensor]
    weights: Tensor
    rng_state: RngState


@dataclass
class Hypergradient:
    """One hypergradient estimate.

    Attributes:
        value: [K] d l_1(theta') / d lambda.
        eps: 0-dim, r / ||v|| (the finite-difference step; also reported by the exact modes).
        v_norm: 0-dim ||v||, v = grad_theta' l_1(B_val; theta').
        outer_loss: 0-dim l_1(B_val; theta').
        per_task: [K] per-task losses on B_tr at theta (detached).
        mode: ``fd`` | ``jvp`` | ``unroll``.
        collapsed: 0-dim fraction of perturbed entries where theta+ and theta- round to the same
            compute-dtype value (``fd`` under low precision only, else None).
    """

    value: Tensor
    eps: Tensor
    v_norm: Tensor
    outer_loss: Tensor
    per_task: Tensor
    mode: str
    collapsed: Tensor | None = None

    def problem(self) -> str | None:
        """Why this estimate must not update lambda (None when it may). One host sync."""
        flags = torch.stack(
            [~torch.isfinite(self.v_norm), self.v_norm == 0, ~torch.isfinite(self.value).all()]
        ).tolist()
        if flags[0]:
            return "the validation gradient v is not finite (l_1 on the validation batch is NaN or Inf)"
        if flags[1]:
            return "the validation gradient v is zero (||v|| = 0): the outer objective gives no direction"
        if flags[2]:
            return f"the {self.mode} hypergradient is not finite (NaN or Inf in the training losses near theta)"
        return None


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------
def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"hypergradient mode must be one of {MODES}, got {mode!r}")


def check_outer(spec: TaskSpec) -> None:
    """The spec must name at least one outer task (l_1)."""
    if not spec.outer_indices:
        raise ValueError(
            f"the task spec has no outer task (l_1): mark one with Task(..., outer=True); tasks are {list(spec.names)}"
        )


def check_model_output(logits: Tensor, spec: TaskSpec, batch_size: int, what: str = "model") -> None:
    """The model must return packed logits [B, spec.num_columns]."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"{what} must return a logits tensor [B, C], got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape != (batch_size, spec.num_columns):
        layout = ", ".join(f"{t.name}:{t.num_columns}" for t in spec.tasks)
        raise ValueError(
            f"{what} returned shape {tuple(logits.shape)} but the task spec needs packed logits "
            f"[B={batch_size}, C={spec.num_columns}] ({layout})"
        )


def check_outer_labels(targets: Tensor, spec: TaskSpec, what: str = "validation batch") -> None:
    """Some sample of the batch must carry a label of an outer task (one host sync)."""
    check_outer(spec)
    if targets.dim() != 2 or targets.shape[1] != spec.num_targets:
        raise ValueError(f"{what}: targets must be [B, J={spec.num_targets}], got {tuple(targets.shape)}")
    cols = [targets[:, spec.target_columns(k)] for k in spec.outer_indices]
    if not bool(torch.stack([(~torch.isnan(c)).any() for c in cols]).any()):
        names = [spec.tasks[k].name for k in spec.outer_indices]
        raise ValueError(
            f"{what} has no label for the outer task(s) {names} (all NaN): l_1 is undefined there; "
            "every validation batch needs outer labels"
        )


def split_batch(batch, what: str) -> tuple[Tensor, Tensor]:
    """(inputs, targets) from a batch tuple."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{what} must be an (inputs, targets) pair, got {type(batch).__name__}")
    inputs, targets = batch
    if not isinstance(targets, Tensor) or not isinstance(inputs, Tensor):
        raise ValueError(f"{what}: inputs and targets must be tensors")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"{what}: {inputs.shape[0]} inputs but {targets.shape[0]} target rows")
    return inputs, targets


# ---------------------------------------------------------------------------------------------
# The pieces of a bi-level step
# ---------------------------------------------------------------------------------------------
def forward_losses(
    model: nn.Module,
    spec: TaskSpec,
    inputs: Tensor,
    targets: Tensor,
    *,
    params: dict[str, Tensor] | None = None,
    functional: bool = False,
    twice_differentiable: bool = False,
    amp_dtype: torch.dtype | None = None,
    backend: str | None = None,
    what: str = "model",
) -> Tensor:
    """[K] per-task losses of the model on a batch, with a graph.

    ``functional`` (or ``params``) runs the forward through ``functional_call`` with cloned
    buffers, leaving BatchNorm statistics untouched; ``params`` replaces those parameters.
    ``twice_differentiable`` computes the loss with the reference ops (double backward).
    """
    device = inputs.device
    with autocast(device, amp_dtype):
        if functional or params is not None:
            logits = functional_call(model, {**(params or {}), **cloned_buffers(model)}, (inputs,))
        else:
            logits = model(inputs)
    check_model_output(logits, spec, inputs.shape[0], what)
    if twice_differentiable:
        check_loss_inputs(logits, targets, torch.ones(spec.num_tasks, device=logits.device), spec)
        return reference.per_task_losses(logits, targets, spec)
    return multitask_loss(logits, targets, spec, backend=backend)[0]


def inner_pass(
    model: nn.Module,
    spec: TaskSpec,
    layout: ParamLayout,
    inputs: Tensor,
    targets: Tensor,
    weights: Tensor,
    *,
    mode: str = "fd",
    functional: bool = False,
    keep_graph: bool = False,
    into_grad: bool = False,
    amp_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> InnerPass:
    """Forward at theta on B_tr and g = grad_theta sum_k w_k l_k (step 1's gradient).

    ``functional`` leaves BatchNorm statistics untouched (the forward's gradient will not be the
    real update); ``keep_graph`` keeps the forward's graph for a later ``per_task.backward(w)``.
    ``into_grad`` accumulates g into the parameters' ``.grad`` (which the caller has zeroed, e.g.
    views of a persistent buffer: no new N-sized allocation) and returns those tensors as g;
    else g comes from ``torch.autograd.grad`` and ``.grad`` is untouched. Ignored by ``unroll``.
    """
    rng_state = RngState.capture(inputs.device)
    unroll = mode == "unroll"
    per_task = forward_losses(
        model,
        spec,
        inputs,
        targets,
        functional=functional,
        twice_differentiable=unroll,
        amp_dtype=amp_dtype,
        backend=backend,
    )
    w = weights.detach().to(per_task.dtype).clone()
    if unroll:
        w.requires_grad_(True)
    total = (w * per_task).sum()
    if into_grad and not unroll:
        params = list(layout.params)
        total.backward(inputs=params, retain_graph=keep_graph)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        return InnerPass(per_task, grads, w, rng_state)
    grads = torch.autograd.grad(
        total, layout.params, retain_graph=keep_graph or unroll, create_graph=unroll, allow_unused=True
    )
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(layout.params, grads)]
    return InnerPass(per_task, grads, w, rng_state)


def outer_loss(per_task: Tensor, spec: TaskSpec) -> Tensor:
    """l_1: the sum of the outer tasks' losses."""
    return per_task[list(spec.outer_indices)].sum()


def validation_gradient(
    model: nn.Module,
    spec: TaskSpec,
    layout: ParamLayout,
    theta_prime: list[Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    out: Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """(v, l_1): v = grad_theta' l_1(B_val; theta') as a flat master-dtype [N] buffer.

    ``theta_prime`` holds one tensor per layout parameter. The backward accumulates each
    parameter's gradient straight into its slice of v (the slice is preset as the leaf's
    ``.grad``), so v costs N values and no concatenation. ``out``: a buffer to reuse for v.
    """
    if out is None:
        v = torch.zeros(layout.numel, dtype=layout.master_dtype, device=layout.device)
    else:
        v = out.zero_()
    slices = layout.views(v)
    leaves = []
    for t, gv in zip(theta_prime, slices):
        leaf = t.detach().requires_grad_(True)
        if leaf.dtype == gv.dtype:
            leaf.grad = gv  # accumulated in place (no grad mode in the backward)
        leaves.append(leaf)
    per_task = forward_losses(
        model,
        spec,
        inputs,
        targets,
        params=layout.as_dict(leaves),
        amp_dtype=amp_dtype,
        backend=backend,
        what="model (validation)",
    )
    l1 = outer_loss(per_task, spec)
    if l1.requires_grad:
        l1.backward(inputs=leaves)
    with torch.no_grad():
        for leaf, gv in zip(leaves, slices):
            if leaf.grad is not None and leaf.grad.data_ptr() != gv.data_ptr():
                gv.copy_(leaf.grad)  # half-precision parameters, or autograd replaced the buffer
    return v, l1.detach()


def jvp_losses(
    model: nn.Module,
    spec: TaskSpec,
    layout: ParamLayout,
    direction: Tensor,
    inputs: Tensor,
    targets: Tensor,
    *,
    rng_state: RngState | None,
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """[K] J(theta) w: the directional derivative of the per-task losses on B_tr along flat ``w``,
    by one forward-mode pass (reference loss), replaying the dropout masks of ``rng_state``; the
    model's buffers and the global random streams are untouched."""
    primals = tuple(p.detach() for p in layout.params)
    tangents = tuple(layout.views(direction, dtype=layout.dtype))
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def losses(*params):
        # Buffers cloned inside the transformed function: BatchNorm may update them in place.
        state = {**dict(zip(layout.names, params)), **{n: b.clone() for n, b in buffers.items()}}
        return reference.per_task_losses(functional_call(model, state, (inputs,)), targets, spec)

    device = inputs.device
    with torch.no_grad(), replay(rng_state, device), autocast(device, amp_dtype):
        _, jv = torch.func.jvp(losses, primals, tangents)
    return jv


def hypergradient_from(
    model: nn.Module,
    spec: TaskSpec,
    layout: ParamLayout,
    step: VirtualStep,
    inner: InnerPass,
    inputs_tr: Tensor,
    targets_tr: Tensor,
    inputs_val: Tensor,
    targets_val: Tensor,
    *,
    mode: str = "fd",
    radius: float = 0.01,
    batched: bool = True,
    keep_graph: bool = False,
    consume_grads: bool = False,
    v_out: Tensor | None = None,
    pair_out: Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    backend: str | None = None,
    sync: DistributedSync | None = None,
) -> Hypergradient:
    """Steps 1-3 of the bi-level step after the forward at theta (``inner``): virtual step, v,
    and the hypergradient by ``mode``. The model's parameters, buffers and the global random
    streams are left as they are (the validation forward draws from the streams like any forward).

    ``consume_grads``: ``inner.grads`` is not needed afterwards, so theta' may be written over it
    (it is set to None). ``keep_graph``: keep the graph of ``inner.per_task`` alive. ``v_out``:
    a buffer to reuse for v (overwritten); ``pair_out``: a [2, N] buffer in the master dtype to
    reuse for theta+- (fd only; overwritten). ``sync``: average v and the K-vectors (J v, or L(theta+-))
    over the ranks (``inner.grads`` must already be averaged); not with ``unroll``."""
    check_mode(mode)
    if sync is not None and mode == "unroll":
        raise ValueError(UNROLL_ERROR)
    per_task = inner.per_task.detach()
    if mode == "unroll":
        theta_prime = step.apply_differentiable(layout.params, inner.grads)
        val = forward_losses(
            model,
            spec,
            inputs_val,
            targets_val,
            params=layout.as_dict(theta_prime),
            amp_dtype=amp_dtype,
            backend=backend,
            what="model (validation)",
        )
        l1 = outer_loss(val, spec)
        value, *v = torch.autograd.grad(l1, [inner.weights, *theta_prime], retain_graph=keep_graph)
        v_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.to(layout.master_dtype)) for t in v]))
        eps = radius / v_norm
        return Hypergradient(value.detach(), eps, v_norm, l1.detach(), per_task, mode)

    if consume_grads and layout.dtype == layout.master_dtype:
        theta_prime = step.apply_(inner.grads, layout.params)  # over g: no new N-sized buffer
        inner.grads = None
    else:
        theta_prime = layout.views(step.apply(layout.theta(), inner.grads, layout), dtype=layout.dtype)
    v, l1 = validation_gradient(
        model, spec, layout, theta_prime, inputs_val, targets_val, out=v_out, amp_dtype=amp_dtype, backend=backend
    )
    del theta_prime
    if sync is not None:
        sync.average_(v, "the validation gradient v")  # then ||v|| and eps are global
    v_norm = torch.linalg.vector_norm(v)
    w = step.direction(v, layout)
    if mode == "jvp":
        jv = jvp_losses(model, spec, layout, w, inputs_tr, targets_tr, rng_state=inner.rng_state, amp_dtype=amp_dtype)
        if sync is not None:
            sync.average_(jv, "J v")
        eps = radius / torch.linalg.vector_norm(w)
        return Hypergradient(-step.scale * jv.to(per_task.dtype), eps, v_norm, l1, per_task, mode)

    pair, eps, _ = perturb_pair(layout.theta(), w, radius, out=pair_out)
    del v, w
    collapsed = None
    compute = effective_dtype(layout.dtype, amp_dtype)
    if compute in LOW_PRECISION:
        collapsed = collapsed_fraction(pair, compute)
    losses = paired_losses(
        model,
        spec,
        layout,
        pair,
        inputs_tr,
        targets_tr,
        batched=batched,
        rng_state=inner.rng_state,
        amp_dtype=amp_dtype,
        backend=backend,
    )
    if sync is not None:
        sync.average_(losses, "the paired losses L(theta+-)")  # 2K numbers
    eps = eps.to(losses.dtype)
    # eps = 0 (v = 0 or not finite) gives NaN here, which problem() reports; never used as a step.
    value = -step.scale * (losses[0] - losses[1]) / (2.0 * eps)
    return Hypergradient(value, eps, v_norm, l1, per_task, mode, collapsed)


def hypergradient(
    model: nn.Module,
    spec: TaskSpec,
    batch_tr,
    batch_val,
    weights: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    mode: str = "fd",
    radius: float = 0.01,
    batched: bool = True,
    amp_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> Hypergradient:
    """The hypergradient of one bi-level step, leaving the model untouched.

    Args:
        model: returns packed logits [B, C = spec.num_columns]; its current mode (train/eval)
            decides BatchNorm's batch statistics and dropout.
        spec: the task spec; its outer tasks form l_1.
        batch_tr: (inputs, targets [B, J]) training batch B_tr.
        batch_val: (inputs, targets [B', J]) validation batch B_val (needs outer labels).
        weights: [K] task weights lambda.
        optimizer: the real optimizer: alpha = its current lr, wd its weight decay, SGD momentum
            buffers honoured.
        mode: ``fd`` | ``jvp`` | ``unroll``.
        radius: r in eps = r / ||v||.
        batched: ``fd``: both perturbed sides in one vmapped forward (else two forwards).
        amp_dtype: None or torch.bfloat16 (autocast; the perturbation stays float32).
        backend: loss/perturbation backend (default by device).

    Returns:
        :class:`Hypergradient` (value [K] = d l_1(theta') / d lambda). Parameters, their ``.grad``,
        buffers and the global random streams are unchanged afterwards.
    """
    check_mode(mode)
    check_amp_dtype(amp_dtype)
    check_outer(spec)
    inputs_tr, targets_tr = split_batch(batch_tr, "training batch")
    inputs_val, targets_val = split_batch(batch_val, "validation batch")
    check_outer_labels(targets_val, spec)
    if weights.shape != (spec.num_tasks,):
        raise ValueError(f"weights must be [K={spec.num_tasks}], got {tuple(weights.shape)}")
    layout = ParamLayout.from_model(model, optimizer)
    step = VirtualStep.from_optimizer(optimizer, layout)
    with replay(None, inputs_tr.device):
        inner = inner_pass(
            model,
            spec,
            layout,
            inputs_tr,
            targets_tr,
            weights,
            mode=mode,
            functional=True,
            amp_dtype=amp_dtype,
            backend=backend,
        )
        return hypergradient_from(
            model,
            spec,
            layout,
            step,
            inner,
            inputs_tr,
            targets_tr,
            inputs_val,
            targets_val,
            mode=mode,
            radius=radius,
            batched=batched,
            consume_grads=True,
            amp_dtype=amp_dtype,
            backend=backend,
        )
