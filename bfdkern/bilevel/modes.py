"""The three ways to the hypergradient d l_1(B_val; theta'(lambda)) / d lambda, as objects.

With theta' = theta - alpha (grad_theta sum_k lambda_k l_k(B_tr; theta) + wd theta) and
v = grad_theta' l_1(B_val; theta'):

* :class:`FiniteDifference` (``fd``, the default; the paper's Eq. 18): -alpha (L(theta+) - L(theta-)) / (2 eps)
  with theta+- = theta +- eps v, eps = r / ||v||, L the per-task loss vector on B_tr. Both sides are
  evaluated together (:mod:`bfdkern.bilevel.paired_eval`). Error O(eps^2).
* :class:`ForwardMode` (``jvp``, exact): -alpha J(theta) v, one forward-mode pass (``torch.func.jvp``).
* :class:`Unrolled` (``unroll``, exact; the paper's Eq. 17): the gradient of l_1(theta'(lambda)) in lambda
  by a double backward through the virtual step (the inner loss must be twice differentiable).

Each mode declares what it needs, so callers ask a capability instead of comparing names. The
hypergradient is with respect to lambda as the loss sees it; a trainer chains it to its parametrisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bfdkern.bilevel.choices import MODES
from bfdkern.bilevel.distributed import UNROLL_ERROR
from bfdkern.bilevel.objective import outer_loss
from bfdkern.bilevel.paired_eval import paired_losses
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.passes import InnerPass, forward_losses, jvp_losses, validation_gradient
from bfdkern.bilevel.precision import LOW_PRECISION, collapsed_fraction, effective_dtype
from bfdkern.bilevel.virtual_step import VirtualStep
from bfdkern.ops import perturb_pair

PROBLEMS = (
    "the validation gradient v is not finite (l_1 on the validation batch is NaN or Inf)",
    "the validation gradient v is zero (||v|| = 0): the outer objective gives no direction",
    "the hypergradient is not finite (NaN or Inf in the training losses near theta)",
)
"""Why an estimate must not update lambda, in the order of :meth:`Hypergradient.problem_flags`."""


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

    def problem_flags(self) -> Tensor:
        """[3] bool on the device: the first :data:`PROBLEMS` entry that holds, if any (no host sync)."""
        flags = torch.stack([~torch.isfinite(self.v_norm), self.v_norm == 0, ~torch.isfinite(self.value).all()])
        earlier = torch.cumsum(flags, 0) - flags.long()  # problems before each one
        return flags & (earlier == 0)

    def problem(self) -> str | None:
        """Why this estimate must not update lambda (None when it may). One host sync."""
        flags = self.problem_flags().tolist()
        return next((text for text, bad in zip(PROBLEMS, flags) if bad), None)


@dataclass
class OuterStep:
    """What a mode needs after the forward at theta: the model, objective and parameters, the virtual
    step, step 1's :class:`InnerPass`, both batches (on the device) and the options.

    Attributes:
        consume_grads: ``inner.grads`` is not needed afterwards, so theta' may be written over it.
        keep_graph: keep the graph of ``inner.per_task`` alive (the real update backpropagates it).
        v_out, pair_out: buffers to reuse for v [N] and theta+- [2, N] (overwritten), or None.
        sync: a DistributedSync averaging v and the K-vectors over the ranks (``inner.grads`` already are).
    """

    model: nn.Module
    objective: Any
    layout: ParamLayout
    virtual: VirtualStep
    inner: InnerPass
    batch_tr: Any
    batch_val: Any
    radius: float = 0.01
    batched_pair: bool = True
    keep_graph: bool = False
    consume_grads: bool = False
    v_out: Tensor | None = None
    pair_out: Tensor | None = None
    amp_dtype: torch.dtype | None = None
    sync: Any = None

    def validation_direction(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Step 2 for an inner gradient without a graph: theta', then (v, ||v||, l_1, w) with w the
        perturbation direction (v itself when every parameter has the same alpha)."""
        layout, inner = self.layout, self.inner
        if self.consume_grads and layout.dtype == layout.master_dtype:
            theta_prime = self.virtual.apply_(inner.grads, layout.params)  # over g: no new N-sized buffer
            inner.grads = None
        else:
            theta_prime = layout.views(self.virtual.apply(layout.theta(), inner.grads, layout), dtype=layout.dtype)
        v, l1 = validation_gradient(
            self.model, self.objective, layout, theta_prime, self.batch_val, out=self.v_out, amp_dtype=self.amp_dtype
        )
        del theta_prime
        if self.sync is not None:
            self.sync.average_(v, "the validation gradient v")  # then ||v|| and eps are global
        return v, torch.linalg.vector_norm(v), l1, self.virtual.direction(v, layout)


class HypergradientMode:
    """A way to the hypergradient, and what it needs.

    Attributes:
        name: ``fd`` | ``jvp`` | ``unroll``.
        needs_pair_workspace: keeps a [2, N] theta+- buffer.
        distributed: works under torch.distributed (with the explicit all-reduces).
        differentiates_inner_gradient: g keeps a graph (double backward; twice-differentiable losses),
            so it cannot live in the ``.grad`` workspace.
        forward_mode: runs forward-mode AD through the model.
        capturable: a step in this mode can be captured as one CUDA graph.
    """

    name: ClassVar[str]
    needs_pair_workspace: ClassVar[bool] = False
    distributed: ClassVar[bool] = True
    differentiates_inner_gradient: ClassVar[bool] = False
    forward_mode: ClassVar[bool] = False
    capturable: ClassVar[bool] = True

    def estimate(self, s: OuterStep) -> Hypergradient:
        """Steps 2-3 of the bi-level step: v and the hypergradient. Parameters, buffers and the global
        random streams are left as they are."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FiniteDifference(HypergradientMode):
    """``fd``: the paired central difference of the paper."""

    name = "fd"
    needs_pair_workspace = True

    def estimate(self, s: OuterStep) -> Hypergradient:
        v, v_norm, l1, w = s.validation_direction()
        pair, eps, _ = perturb_pair(s.layout.theta(), w, s.radius, out=s.pair_out)
        del v, w
        collapsed = None
        compute = effective_dtype(s.layout.dtype, s.amp_dtype)
        if compute in LOW_PRECISION:
            collapsed = collapsed_fraction(pair, compute)
        rng = s.inner.rng_state
        losses = paired_losses(
            s.model,
            s.objective,
            s.layout,
            pair,
            s.batch_tr,
            batched=s.batched_pair,
            rng_state=rng,
            amp_dtype=s.amp_dtype,
        )
        if s.sync is not None:
            s.sync.average_(losses, "the paired losses L(theta+-)")  # 2K numbers
        eps = eps.to(losses.dtype)
        # eps = 0 (v = 0 or not finite) gives NaN here, which problem_flags() reports; never used as a step.
        value = -s.virtual.scale * (losses[0] - losses[1]) / (2.0 * eps)
        return Hypergradient(value, eps, v_norm, l1, s.inner.per_task.detach(), self.name, collapsed)


class ForwardMode(HypergradientMode):
    """``jvp``: the exact J(theta) v by one forward-mode pass."""

    name = "jvp"
    forward_mode = True

    def estimate(self, s: OuterStep) -> Hypergradient:
        _, v_norm, l1, w = s.validation_direction()
        jv = jvp_losses(
            s.model, s.objective, s.layout, w, s.batch_tr, rng_state=s.inner.rng_state, amp_dtype=s.amp_dtype
        )
        if s.sync is not None:
            s.sync.average_(jv, "J v")
        per_task = s.inner.per_task.detach()
        eps = s.radius / torch.linalg.vector_norm(w)
        return Hypergradient(-s.virtual.scale * jv.to(per_task.dtype), eps, v_norm, l1, per_task, self.name)


class Unrolled(HypergradientMode):
    """``unroll``: the exact gradient through the virtual step by a double backward."""

    name = "unroll"
    distributed = False
    differentiates_inner_gradient = True
    capturable = False

    def estimate(self, s: OuterStep) -> Hypergradient:
        if s.sync is not None:
            raise ValueError(UNROLL_ERROR)
        layout = s.layout
        theta_prime = s.virtual.apply_differentiable(layout.params, s.inner.grads)
        val = forward_losses(
            s.model, s.objective, s.batch_val, params=layout.as_dict(theta_prime), amp_dtype=s.amp_dtype
        )
        l1 = outer_loss(val, s.objective)
        value, *v = torch.autograd.grad(l1, [s.inner.weights, *theta_prime], retain_graph=s.keep_graph)
        v_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.to(layout.master_dtype)) for t in v]))
        eps = s.radius / v_norm
        return Hypergradient(value.detach(), eps, v_norm, l1.detach(), s.inner.per_task.detach(), self.name)


_MODES = {m.name: m for m in (FiniteDifference(), ForwardMode(), Unrolled())}
if tuple(_MODES) != MODES:  # the command line offers choices.MODES without importing this module
    raise RuntimeError(f"bfdkern.bilevel.choices.MODES {MODES} differs from the mode classes {tuple(_MODES)}")
"""The mode names: ``fd``, ``jvp``, ``unroll``."""


def get_mode(mode: str | HypergradientMode) -> HypergradientMode:
    """The mode object for a name (or the object itself)."""
    if isinstance(mode, HypergradientMode):
        return mode
    if mode not in _MODES:
        raise ValueError(f"hypergradient mode must be one of {MODES}, got {mode!r}")
    return _MODES[mode]
