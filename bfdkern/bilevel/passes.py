"""The passes a bi-level step makes through the model: the forward at theta and g (step 1), the
validation gradient v at theta' (step 2) and the forward-mode J(theta) w (step 3 of ``jvp``).

Every pass takes an :class:`~bfdkern.bilevel.objective.Objective` and a batch on the model's device.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._pytree import tree_leaves

from bfdkern.bilevel.forward_mode import explain, failing_module, forward_mode_safe, lacks_forward_rule, math_attention
from bfdkern.bilevel.objective import outer_loss
from bfdkern.bilevel.paired_eval import cloned_buffers
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.precision import autocast
from bfdkern.bilevel.rng import RngState, replay

LOSS_VARIANTS = ("losses", "twice_differentiable_losses", "forward_mode_losses")


@dataclass
class InnerPass:
    """What the forward at theta on B_tr leaves behind.

    Attributes:
        per_task: [K] losses at theta; its graph is alive while a caller keeps it (reused forward).
        grads: grad_theta sum_k w_k l_k per layout parameter (with a graph when differentiated again).
        weights: [K] the weights w used; a leaf with ``requires_grad`` when differentiated again.
        rng_state: the random state the forward started from (replayed for dropout masks).
    """

    per_task: Tensor
    grads: list[Tensor] | None
    weights: Tensor
    rng_state: RngState | None


def _device(inputs: tuple) -> torch.device:
    for leaf in tree_leaves(inputs):
        if isinstance(leaf, Tensor):
            return leaf.device
    raise ValueError("the model's inputs hold no tensor")


def forward_losses(
    model: nn.Module,
    objective,
    batch,
    *,
    params: dict[str, Tensor] | None = None,
    functional: bool = False,
    variant: str = "losses",
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """[K] per-task losses of the model on a batch, with a graph.

    ``functional`` (or ``params``) runs the forward through ``functional_call`` with cloned buffers,
    leaving BatchNorm statistics untouched; ``params`` replaces those parameters. ``variant`` names the
    objective's method: ``losses``, ``twice_differentiable_losses`` (double backward) or
    ``forward_mode_losses``.
    """
    inputs = objective.inputs(batch)
    with autocast(_device(inputs), amp_dtype):
        if functional or params is not None:
            outputs = functional_call(model, {**(params or {}), **cloned_buffers(model)}, inputs)
        else:
            outputs = model(*inputs)
    return getattr(objective, variant)(outputs, batch)


def inner_pass(
    model: nn.Module,
    objective,
    layout: ParamLayout,
    batch,
    weights: Tensor,
    *,
    differentiable: bool = False,
    functional: bool = False,
    keep_graph: bool = False,
    into_grad: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> InnerPass:
    """Forward at theta on B_tr and g = grad_theta sum_k w_k l_k (step 1's gradient).

    ``differentiable``: g keeps a graph in w and theta (the ``unroll`` mode; twice-differentiable losses,
    attention through the math kernel).
    ``functional`` leaves BatchNorm statistics untouched (the forward's gradient will not be the real
    update); ``keep_graph`` keeps the forward's graph for a later ``per_task.backward(w)``.
    ``into_grad`` accumulates g into the parameters' ``.grad`` (which the caller has zeroed, e.g. views of
    a persistent buffer: no new N-sized allocation) and returns those tensors as g; else g comes from
    ``torch.autograd.grad`` and ``.grad`` is untouched. Ignored when ``differentiable``.
    """
    rng_state = RngState.capture(layout.device)
    variant = "twice_differentiable_losses" if differentiable else "losses"
    with math_attention() if differentiable else contextlib.nullcontext():
        per_task = forward_losses(model, objective, batch, functional=functional, variant=variant, amp_dtype=amp_dtype)
    w = weights.detach().to(per_task.dtype).clone()
    if differentiable:
        w.requires_grad_(True)
    total = (w * per_task).sum()
    if into_grad and not differentiable:
        params = list(layout.params)
        total.backward(inputs=params, retain_graph=keep_graph)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        return InnerPass(per_task, grads, w, rng_state)
    grads = torch.autograd.grad(
        total, layout.params, retain_graph=keep_graph or differentiable, create_graph=differentiable, allow_unused=True
    )
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(layout.params, grads)]
    return InnerPass(per_task, grads, w, rng_state)


def validation_gradient(
    model: nn.Module,
    objective,
    layout: ParamLayout,
    theta_prime: list[Tensor],
    batch,
    *,
    out: Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """(v, l_1): v = grad_theta' l_1(B_val; theta') as a flat master-dtype [N] buffer.

    ``theta_prime`` holds one tensor per layout parameter. The backward accumulates each parameter's
    gradient straight into its slice of v (the slice is preset as the leaf's ``.grad``), so v costs N
    values and no concatenation. ``out``: a buffer to reuse for v.
    """
    v = torch.zeros(layout.numel, dtype=layout.master_dtype, device=layout.device) if out is None else out.zero_()
    slices = layout.views(v)
    leaves = []
    for t, gv in zip(theta_prime, slices):
        leaf = t.detach().requires_grad_(True)
        if leaf.dtype == gv.dtype:
            leaf.grad = gv  # accumulated in place (no grad mode in the backward)
        leaves.append(leaf)
    per_task = forward_losses(model, objective, batch, params=layout.as_dict(leaves), amp_dtype=amp_dtype)
    l1 = outer_loss(per_task, objective)
    if l1.requires_grad:
        l1.backward(inputs=leaves)
    with torch.no_grad():
        for leaf, gv in zip(leaves, slices):
            if leaf.grad is not None and leaf.grad.data_ptr() != gv.data_ptr():
                gv.copy_(leaf.grad)  # half-precision parameters, or autograd replaced the buffer
    return v, l1.detach()


def jvp_losses(
    model: nn.Module,
    objective,
    layout: ParamLayout,
    direction: Tensor,
    batch,
    *,
    rng_state: RngState | None,
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """[K] J(theta) w: the directional derivative of the per-task losses on B_tr along flat ``w``, by one
    forward-mode pass (the objective's ``forward_mode_losses``, around the traps of
    :mod:`bfdkern.bilevel.forward_mode`), replaying the dropout masks of ``rng_state``; the model's buffers
    and the global random streams are untouched. :class:`~bfdkern.bilevel.forward_mode.ForwardModeError`
    names a module without a forward-mode rule."""
    primals = tuple(p.detach() for p in layout.params)
    tangents = tuple(layout.views(direction, dtype=layout.dtype))
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    inputs = objective.inputs(batch)
    device = layout.device

    def losses(*params):
        # Buffers cloned inside the transformed function: BatchNorm may update them in place.
        state = {**dict(zip(layout.names, params)), **{n: b.clone() for n, b in buffers.items()}}
        return objective.forward_mode_losses(functional_call(model, state, inputs), batch)

    def run() -> Tensor:
        with torch.no_grad(), replay(rng_state, device), autocast(device, amp_dtype), forward_mode_safe():
            return torch.func.jvp(losses, primals, tangents)[1]

    try:
        return run()
    except (RuntimeError, NotImplementedError) as exc:
        if not lacks_forward_rule(exc):
            raise
        raise explain(exc, failing_module(model, run)) from exc
