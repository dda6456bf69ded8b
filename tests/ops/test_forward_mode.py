"""Forward mode (torch.func.jvp, torch.autograd.forward_ad) through bfdkern.multitask_loss on every
backend, against forward mode through the float64 reference and against central differences."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

import bfdkern
from bfdkern.ops import reference
from bfdkern.ops.forward_mode import NESTED_FORWARD_ERROR
from tests.helpers import random_inputs
from tests.ops.backends import backend_params, interpreted, require
from tests.ops.test_multitask_loss import levels_spec, small_spec

loss_module = importlib.import_module("bfdkern.ops.multitask_loss")


@pytest.fixture(params=backend_params())
def target(request):
    """(backend, device) that can serve, else skipped with the reason."""
    backend, device = request.param
    return backend, require(backend, device, "multitask_loss")


def silent_tasks(spec) -> tuple[list[str], str]:
    """(tasks whose labels hard_inputs removes: the first categorical and multilabel task and the
    second ordinal one, the ordinal task left with a single label)."""
    by_kind = {}
    for t in spec.tasks:
        by_kind.setdefault(t.kind, []).append(t.name)
    return [by_kind["categorical"][0], by_kind["multilabel"][0], by_kind["ordinal"][1]], by_kind["ordinal"][0]


def hard_inputs(spec, batch, dtype, device):
    """Random logits, targets (missing labels, ties: few ordinal values), weights and tangents, with an
    all-missing task of each kind and an ordinal task holding a single label (no pair)."""
    logits, targets, weights = random_inputs(spec, batch, dtype=dtype, missing=0.3)
    empty, single = silent_tasks(spec)
    for name in [*empty, single]:
        targets[:, spec.target_columns(name)] = float("nan")
    targets[batch // 2, spec.target_columns(single)] = 2.0
    logits_t = torch.randn(logits.shape, dtype=torch.float64).to(dtype)
    weights_t = torch.randn(weights.shape, dtype=torch.float64).to(dtype)
    return tuple(t.to(device) for t in (logits, targets, weights, logits_t, weights_t))


def reference_jvp(spec, logits, targets, weights, logits_t, weights_t):
    """Forward mode through the reference ops in float64: (per_task_dot [K], total_dot [])."""
    f64 = [t.detach().cpu().to(torch.float64) for t in (logits, targets, weights, logits_t, weights_t)]
    z, y, w, zt, wt = f64
    _, tangents = torch.func.jvp(lambda x, v: reference.multitask_loss(x, y, v, spec), (z, w), (zt, wt))
    return tangents


def fused_jvp(spec, logits, targets, weights, logits_t, weights_t, backend):
    def loss(x, v):
        return bfdkern.multitask_loss(x, targets, spec, v, backend=backend)

    primals, tangents = torch.func.jvp(loss, (logits, weights), (logits_t, weights_t))
    return primals, tangents


def batch_for(backend, device, batch):
    return min(batch, 12) if interpreted(backend, device) else batch


@pytest.mark.parametrize("batch", [2, 9, 40])
def test_jvp_matches_reference_float64(target, batch):
    backend, device = target
    spec = levels_spec()
    inputs = hard_inputs(spec, batch_for(backend, device, batch), torch.float64, device)
    want = reference_jvp(spec, *inputs)
    (per_task, total), got = fused_jvp(spec, *inputs, backend)
    for name, g, w in zip(("per_task_dot", "total_dot"), got, want):
        assert g.dtype == torch.float64 and g.shape == w.shape, name
        torch.testing.assert_close(g.cpu(), w, rtol=1e-12, atol=1e-12, msg=name)
    # The primal outputs are the op's own, untouched by the transform.
    plain = bfdkern.multitask_loss(inputs[0], inputs[1], spec, inputs[2], backend=backend)
    assert torch.equal(per_task, plain[0]) and torch.equal(total, plain[1])
    # The all-missing tasks and the pairless ordinal task have a zero tangent, exactly.
    empty, single = silent_tasks(spec)
    for name in [*empty, single]:
        assert got[0][spec.index(name)].item() == 0.0, name


def test_jvp_matches_central_difference(target):
    """float64: the jvp equals (L(z + h t) - L(z - h t)) / 2h up to the O(h^2) truncation."""
    backend, device = target
    spec = small_spec()
    logits, targets, weights, logits_t, weights_t = hard_inputs(spec, 10, torch.float64, device)
    _, (per_task_t, total_t) = fused_jvp(spec, logits, targets, weights, logits_t, weights_t, backend)
    h = 1e-5

    def at(step):
        return bfdkern.multitask_loss(
            logits + step * logits_t, targets, spec, weights + step * weights_t, backend=backend
        )

    (plus, plus_total), (minus, minus_total) = at(h), at(-h)
    torch.testing.assert_close(per_task_t, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(total_t, (plus_total - minus_total) / (2 * h), rtol=1e-6, atol=1e-8)


def test_jvp_float32(target):
    """float32 logits: tangents in float32 within a few float32 units of the terms they sum."""
    backend, device = target
    spec = levels_spec()
    inputs = hard_inputs(spec, batch_for(backend, device, 33), torch.float32, device)
    want = reference_jvp(spec, *inputs)
    _, (per_task_t, total_t) = fused_jvp(spec, *inputs, backend)
    assert per_task_t.dtype == torch.float32 and total_t.dtype == torch.float32
    # Scale of the summed terms |d l_k / d z| |z_dot| per task: the error is relative to it.
    z, y, _, zt, _ = (t.cpu().double() for t in inputs)
    x = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reference.per_task_losses(x, y, spec).sum(), x)
    scale = torch.stack([(grad * zt).abs()[:, spec.columns(k)].sum() for k in range(spec.num_tasks)])
    err = (per_task_t.cpu().double() - want[0]).abs()
    assert (err <= 1e-5 * scale + 1e-7).all(), (err, scale)
    torch.testing.assert_close(total_t.cpu().double(), want[1], rtol=1e-4, atol=1e-5)


def test_forward_ad_dual_tensors(target):
    """torch.autograd.forward_ad gives the same tangents as torch.func.jvp, bit for bit."""
    backend, device = target
    spec = levels_spec()
    logits, targets, weights, logits_t, weights_t = hard_inputs(spec, 8, torch.float64, device)
    _, want = fused_jvp(spec, logits, targets, weights, logits_t, weights_t, backend)
    with fwAD.dual_level():
        outs = bfdkern.multitask_loss(
            fwAD.make_dual(logits, logits_t), targets, spec, fwAD.make_dual(weights, weights_t), backend=backend
        )
        got = [fwAD.unpack_dual(o).tangent for o in outs]
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_tangent_of_the_weights_alone(target):
    """Only lambda moves: per_task_dot = 0 and total_dot = sum_k w_dot_k l_k."""
    backend, device = target
    spec = small_spec()
    logits, targets, weights, _, weights_t = hard_inputs(spec, 6, torch.float64, device)
    (per_task, _), (per_task_t, total_t) = torch.func.jvp(
        lambda v: bfdkern.multitask_loss(logits, targets, spec, v, backend=backend), (weights,), (weights_t,)
    )
    assert torch.equal(per_task_t, torch.zeros_like(per_task_t))
    torch.testing.assert_close(total_t, (weights_t * per_task).sum(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_fused_backends_do_not_fall_back_to_the_reference(monkeypatch, backend):
    """The plain jvp of a fused backend runs its own backward kernel, not the reference ops."""
    dev = require(backend, "cpu", "multitask_loss")
    spec = small_spec()
    logits, targets, weights, logits_t, weights_t = hard_inputs(spec, 6, torch.float64, dev)
    want = reference_jvp(spec, logits, targets, weights, logits_t, weights_t)

    def refuse(*args, **kwargs):
        raise AssertionError("the reference ops ran")

    monkeypatch.setattr(loss_module.reference, "per_task_losses", refuse)
    with torch.no_grad():  # as the trainer runs it
        _, got = fused_jvp(spec, logits, targets, weights, logits_t, weights_t, backend)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)


def test_outer_transforms_compose(target):
    """grad of a jvp (the tangent stays differentiable), vmap of a jvp and a jvp of a vmap."""
    backend, device = target
    spec = small_spec()
    logits, targets, weights, logits_t, _ = hard_inputs(spec, 5, torch.float64, device)

    def fused(x):
        return bfdkern.multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)[0]

    def ref(x):
        return reference.per_task_losses(x, targets, spec)

    def tangent_sum(loss):
        return lambda x: torch.func.jvp(loss, (x,), (logits_t,))[1].sum()

    got = torch.func.grad(tangent_sum(fused))(logits)
    torch.testing.assert_close(got, torch.func.grad(tangent_sum(ref))(logits), rtol=1e-10, atol=1e-12)

    stacked_t = torch.stack([logits_t, -2.0 * logits_t, torch.zeros_like(logits_t)])
    want = torch.stack([torch.func.jvp(ref, (logits,), (t,))[1] for t in stacked_t])
    got = torch.func.vmap(lambda t: torch.func.jvp(fused, (logits,), (t,))[1])(stacked_t)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    stacked = torch.stack([logits, 0.5 * logits])
    got = torch.func.jvp(torch.func.vmap(fused), (stacked,), (stacked_t[:2],))[1]
    want = torch.stack([torch.func.jvp(ref, (z,), (t,))[1] for z, t in zip(stacked, stacked_t[:2])])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_func_grad_and_hessian(target):
    """torch.func.grad through the fused op, and torch.func.hessian (forward over reverse: the backward
    recomputed through the reference so that it is differentiable again), equal the reference's."""
    backend, device = target
    spec = small_spec()
    logits, targets, weights, _, _ = hard_inputs(spec, 4, torch.float64, device)

    def fused(x):
        return bfdkern.multitask_loss(x, targets, spec, weights, backend=backend)[1]

    def ref(x):
        return reference.multitask_loss(x, targets, weights, spec)[1]

    torch.testing.assert_close(torch.func.grad(fused)(logits), torch.func.grad(ref)(logits), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(
        torch.func.hessian(fused)(logits), torch.func.hessian(ref)(logits), rtol=1e-10, atol=1e-13
    )


def test_jvp_of_a_jvp_is_refused(target):
    """PyTorch drops the outer tangent through a custom Function's jvp: a clear error, not a zero."""
    backend, device = target
    spec = small_spec()
    logits, targets, weights, logits_t, _ = hard_inputs(spec, 4, torch.float64, device)

    def inner(x):
        return torch.func.jvp(
            lambda z: bfdkern.multitask_loss(z, targets, spec, weights, backend=backend)[0], (x,), (logits_t,)
        )[1]

    with pytest.raises(NotImplementedError, match="forward-over-forward"):
        torch.func.jvp(inner, (logits,), (logits_t,))
    assert "reference.per_task_losses" in NESTED_FORWARD_ERROR


def test_registered_op_forward_mode():
    """The registered op: forward_ad dual tensors carry the rule; torch.func.jvp, which cannot enter a
    registered op, says so instead of returning a zero tangent."""
    backend = "cpp"
    dev = require(backend, "cpu", "multitask_loss")
    spec = levels_spec()
    logits, targets, weights, logits_t, weights_t = hard_inputs(spec, 7, torch.float64, dev)
    layout = spec.layout
    want = reference_jvp(spec, logits, targets, weights, logits_t, weights_t)
    with fwAD.dual_level():
        outs = torch.ops.bfdkern.multitask_loss(
            fwAD.make_dual(logits, logits_t), targets, fwAD.make_dual(weights, weights_t), *layout, backend
        )
        got = [fwAD.unpack_dual(o).tangent for o in outs]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="torch.func.grad / jvp cannot differentiate the registered op"):
        torch.func.jvp(
            lambda x: torch.ops.bfdkern.multitask_loss(x, targets, weights, *layout, backend), (logits,), (logits_t,)
        )


class TinyModel(nn.Module):
    """A two-layer MLP with dropout-free heads producing the spec's packed logits."""

    def __init__(self, spec, features=6, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.LayerNorm(hidden))
        self.head = nn.Linear(hidden, spec.num_columns)

    def forward(self, x):
        return self.head(self.body(x))


def test_jvp_through_a_whole_model(target):
    """J(theta) v of the per-task losses of a small model, one torch.func.jvp over the parameters
    (as the bi-level jvp mode runs it), equals the reference's and a central difference."""
    backend, device = target
    spec = levels_spec()
    torch.manual_seed(0)
    model = TinyModel(spec).to(device=device, dtype=torch.float64)
    batch = batch_for(backend, device, 24)
    x = torch.randn(batch, 6, dtype=torch.float64, device=device)
    _, targets, _ = random_inputs(spec, batch, dtype=torch.float64, device=device, missing=0.3)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for p in model.parameters())
    direction = tuple(torch.randn_like(p) for p in params)

    def losses(loss_fn):
        def run(*ps):
            logits = torch.func.functional_call(model, dict(zip(names, ps)), (x,))
            return loss_fn(logits)

        return run

    def fused(z):
        return bfdkern.multitask_loss(z, targets, spec, backend=backend, check_labels=False)[0]

    def ref(z):
        return reference.per_task_losses(z, targets, spec)

    with torch.no_grad():
        _, got = torch.func.jvp(losses(fused), params, direction)
        _, want = torch.func.jvp(losses(ref), params, direction)
        h = 1e-5
        plus = losses(fused)(*(p + h * d for p, d in zip(params, direction)))
        minus = losses(fused)(*(p - h * d for p, d in zip(params, direction)))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-8)
    assert got.abs().sum() > 0
