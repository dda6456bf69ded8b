"""The Triton kernels called directly, against the float64 reference on fresh random inputs.

Without a GPU they run under TRITON_INTERPRET=1 on CPU tensors (tests/conftest.py sets it), at
small sizes; with a GPU the same tests run on CUDA tensors.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

import triton
import triton.language as tl

from bfdkern.ops import reference
from bfdkern.ops.kernels.triton import multitask_loss as triton_loss
from bfdkern.ops.kernels.triton import perturb as triton_perturb
from bfdkern.ops.kernels.triton import special
from bfdkern.tasks import Task, TaskSpec, blades_spec
from tests.helpers import random_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Loss and gradient tolerances, by logits dtype. A loss term such as 1 - sqrt(p) is O(1) before
# it cancels, so a loss carries an absolute error of a few units of the compute dtype's epsilon
# however small it is. The gradient is compared elementwise to a fraction of its largest entry
# (sums of many pair terms cancel; half gradients are stored in their half dtype), plus a floor of
# a fraction of the compute dtype's epsilon: when every term saturates (logits of 1e4) the largest
# entry is itself ~0 and what is left is rounding in O(1) intermediates.
LOSS_RTOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-6, torch.bfloat16: 2e-6}
LOSS_ATOL = {torch.float64: 1e-14, torch.float32: 5e-7, torch.float16: 5e-7, torch.bfloat16: 5e-7}
GRAD_RTOL = {torch.float64: 1e-11, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def levels_spec() -> TaskSpec:
    """Every kind, with an L-level ordinal task and non-default focal exponents."""
    return TaskSpec(
        (
            Task("score", "ordinal", 1),
            Task("levels", "ordinal", 5),
            Task("plain", "categorical", 6, gamma=0.0),
            Task("focal", "categorical", 3, gamma=2.0),
            Task("binary", "binary", 2, gamma=1.0),
            Task("regions", "multilabel", 3, gamma=1.5),
        ),
        sigma=0.7,
        delta=1e-6,
    )


def run_kernels(spec, logits, targets, weights, upstream):
    """Triton forward and backward on DEVICE."""
    ct = reference.compute_dtype(logits.dtype)
    logits, targets = logits.to(DEVICE), targets.to(DEVICE)
    per_task, total = triton_loss.forward(logits, targets, weights.to(ct).to(DEVICE), spec.layout)
    grad = triton_loss.backward(upstream.to(ct).to(DEVICE), logits, targets, spec.layout)
    return per_task.cpu(), total.cpu(), grad.cpu()


def run_reference(spec, logits, targets, weights, upstream):
    """The float64 reference on the same (upcast) inputs: per_task, total, d(upstream . per_task)/d logits."""
    x = logits.detach().cpu().double().requires_grad_()
    per_task, total = reference.multitask_loss(x, targets.cpu().double(), weights.cpu().double(), spec)
    (grad,) = torch.autograd.grad(per_task, x, upstream.cpu().double())
    return per_task.detach(), total.detach(), grad


def check_against_reference(spec, logits, targets, weights, upstream):
    per_task, total, grad = run_kernels(spec, logits, targets, weights, upstream)
    ref_per_task, ref_total, ref_grad = run_reference(spec, logits, targets, weights, upstream)
    ct = reference.compute_dtype(logits.dtype)
    assert per_task.dtype == ct and total.dtype == ct and total.shape == ()
    assert grad.dtype == logits.dtype and grad.shape == logits.shape
    assert torch.isfinite(per_task).all() and torch.isfinite(total) and torch.isfinite(grad).all()
    rtol, atol = LOSS_RTOL[logits.dtype], LOSS_ATOL[logits.dtype]
    torch.testing.assert_close(per_task.double(), ref_per_task, rtol=rtol, atol=atol)
    torch.testing.assert_close(total.double(), ref_total, rtol=rtol, atol=atol * weights.abs().sum().item())
    scale = ref_grad.abs().max().item()
    floor = torch.finfo(ct).eps / 8
    worst = (grad.double() - ref_grad).abs().max().item()
    assert worst <= GRAD_RTOL[logits.dtype] * scale + floor, f"gradient error {worst:.3g} vs largest entry {scale:.3g}"
    return per_task, grad


def fresh_upstream(spec, seed):
    """A non-uniform upstream K-vector with both signs."""
    return torch.randn(spec.num_tasks, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("batch", "dtype"),
    [
        (1, torch.float64),
        (2, torch.float32),
        (2, torch.float64),
        (9, torch.float32),
        (16, torch.float64),
        (16, torch.float32),
    ],
)
@pytest.mark.parametrize("make_spec", [blades_spec, levels_spec], ids=["blades", "levels"])
def test_loss_matches_reference(make_spec, batch, dtype):
    spec = make_spec()
    logits, targets, weights = random_inputs(spec, batch, dtype=dtype, missing=0.25)
    check_against_reference(spec, logits, targets, weights, fresh_upstream(spec, batch))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_logits_are_upcast(dtype):
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 12, dtype=dtype)
    check_against_reference(spec, logits, targets, weights, fresh_upstream(spec, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_and_float32_targets(dtype):
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 14, dtype=dtype, missing=0.1)
    targets[:, 0] = 2.0  # every pair of the first ordinal task is a tie
    targets[:, 1] = torch.arange(14) % 2  # two levels: many ties
    targets = targets.float()
    check_against_reference(spec, logits, targets, weights, fresh_upstream(spec, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_missing_tasks_give_zero_loss_and_zero_gradient(dtype):
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 10, dtype=dtype)
    targets[:, spec.target_columns("levels")] = float("nan")  # all missing
    targets[:, spec.target_columns("score")] = float("nan")
    targets[3, spec.target_columns("score")] = 1.0  # one label: no pair
    targets[:, spec.target_columns("focal")] = float("nan")
    targets[:, spec.target_columns("regions")] = float("nan")
    per_task, grad = check_against_reference(spec, logits, targets, weights, fresh_upstream(spec, 3))
    for name in ("score", "levels", "focal", "regions"):
        k = spec.index(name)
        assert per_task[k].item() == 0.0
        assert (grad[:, spec.columns(name)] == 0).all()
    assert (per_task[[spec.index("plain"), spec.index("binary")]] > 0).all()


def test_missing_labels_mask_their_samples_only():
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 8, dtype=torch.float64, missing=0.0)
    targets[5, spec.target_columns("plain")] = float("nan")
    targets[2, spec.target_columns("regions").start + 1] = float("nan")
    _, grad = check_against_reference(spec, logits, targets, weights, torch.ones(spec.num_tasks, dtype=torch.float64))
    assert (grad[5, spec.columns("plain")] == 0).all()
    assert grad[2, spec.columns("regions").start + 1] == 0
    assert (grad[2, spec.columns("regions")] != 0).sum() == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_logits_stay_finite(dtype):
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 16, dtype=dtype, scale=1e4)
    check_against_reference(spec, logits, targets, weights, fresh_upstream(spec, 4))
    # Large but close scores: the pair terms do not saturate and the gradient is not zero.
    noise = random_inputs(spec, 16, dtype=torch.float64, scale=0.5)[0]
    near = (1e4 + noise).to(dtype)
    _, grad = check_against_reference(spec, near, targets, weights, fresh_upstream(spec, 5))
    assert grad[:, spec.columns("score")].abs().max() > 1e-3


def test_upstream_vector_selects_tasks():
    """The backward is linear in the upstream K-vector: a one-hot upstream touches only its
    task's columns, and the gradients of all one-hots sum to that of the ones vector."""
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 11, dtype=torch.float64)
    total = torch.zeros_like(logits)
    for k in range(spec.num_tasks):
        onehot = torch.zeros(spec.num_tasks, dtype=torch.float64)
        onehot[k] = -2.5
        grad = triton_loss.backward(onehot.to(DEVICE), logits.to(DEVICE), targets.to(DEVICE), spec.layout).cpu()
        outside = torch.ones(logits.shape[1], dtype=torch.bool)
        outside[spec.columns(k)] = False
        assert (grad[:, outside] == 0).all()
        total += grad
    both = triton_loss.backward(
        torch.full((spec.num_tasks,), -2.5, dtype=torch.float64).to(DEVICE),
        logits.to(DEVICE),
        targets.to(DEVICE),
        spec.layout,
    ).cpu()
    torch.testing.assert_close(total, both, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_many_blocks(monkeypatch, dtype):
    """Several row blocks, pair tiles with a masked tail and several level columns: the GPU's
    tiling, forced at a size the interpreter runs quickly."""
    monkeypatch.setattr(triton_loss, "_blocks", lambda batch, float64: (4, 8, 4))
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 13, dtype=dtype, missing=0.3)
    check_against_reference(spec, logits, targets, weights, fresh_upstream(spec, 6))


def test_repeat_runs_are_bitwise_identical():
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 16, dtype=torch.float32)
    upstream = fresh_upstream(spec, 7)
    first = run_kernels(spec, logits, targets, weights, upstream)
    second = run_kernels(spec, logits, targets, weights, upstream)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Special functions
# ---------------------------------------------------------------------------------------------
@triton.jit
def _special_kernel(x_ptr, erfc_ptr, expm1_ptr, log1p_ptr, n, FLOAT64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(erfc_ptr + offs, special.erfc_nonneg(x, FLOAT64), mask=mask)
    tl.store(expm1_ptr + offs, special.one_minus_exp(-x, FLOAT64), mask=mask)
    tl.store(log1p_ptr + offs, special.log1p_nonneg(x, FLOAT64), mask=mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_special_functions(dtype):
    eps = torch.finfo(dtype).eps
    top = 26.0 if dtype == torch.float64 else 9.0  # erfc stays a normal number up to here
    x = torch.cat([torch.zeros(1), torch.logspace(-9, math.log10(top), 500)]).to(dtype)
    outs = [torch.empty_like(x, device=DEVICE) for _ in range(3)]
    _special_kernel[(1,)](
        x.to(DEVICE), *outs, x.numel(), FLOAT64=dtype == torch.float64, BLOCK=triton.next_power_of_2(x.numel())
    )
    erfc, one_minus_exp, log1p = (o.cpu().double() for o in outs)
    xd = x.double()
    # float64 references of a float64 input: accurate to ~1 ulp, enough at float32 and as a
    # check of the Chebyshev coefficients at float64.
    rel = (erfc - torch.erfc(xd)).abs() / torch.erfc(xd)
    assert (rel <= (16.0 + 2.0 * xd**2) * eps).all(), f"erfc: {rel.max():.3g} relative"
    rel = (one_minus_exp + torch.expm1(-xd)).abs() / (-torch.expm1(-xd)).clamp_min(1e-300)
    assert (rel[1:] <= 4 * eps).all(), f"1 - exp(-x): {rel[1:].max():.3g} relative"
    rel = (log1p - torch.log1p(xd)).abs() / torch.log1p(xd).clamp_min(1e-300)
    assert (rel[1:] <= 4 * eps).all(), f"log1p: {rel[1:].max():.3g} relative"
    assert one_minus_exp[0] == 0.0 and log1p[0] == 0.0


# ---------------------------------------------------------------------------------------------
# The perturbation
# ---------------------------------------------------------------------------------------------
PERTURB_RTOL = {torch.float64: 4e-16, torch.float32: 2.4e-7, torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.mark.parametrize("n", [1, 4099])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_perturb_matches_reference(dtype, n):
    g = torch.Generator().manual_seed(n)
    theta = torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    v = (torch.randn(n, generator=g, dtype=torch.float64) * 3.0).to(dtype)
    theta_before, v_before = theta.clone(), v.clone()
    out, eps, flag = triton_perturb.perturb_pair(theta.to(DEVICE), v.to(DEVICE), 0.01)
    out, eps, flag = out.cpu(), eps.cpu(), flag.cpu()
    ref_out, ref_eps, ref_flag = reference.perturb_pair(theta, v, 0.01)
    assert out.shape == (2, n) and out.dtype == dtype
    assert eps.shape == () and eps.dtype == reference.compute_dtype(dtype)
    assert flag.shape == () and flag.dtype == torch.bool and not flag
    assert torch.equal(theta, theta_before) and torch.equal(v, v_before)
    exact_eps = 0.01 / torch.linalg.vector_norm(v.double())
    torch.testing.assert_close(eps.double(), exact_eps, rtol=4 * torch.finfo(eps.dtype).eps, atol=0.0)
    # Half outputs may differ by one rounding (the interpreter rounds float32 -> bfloat16 toward zero).
    rtol = PERTURB_RTOL[dtype]
    torch.testing.assert_close(out.double(), ref_out.double(), rtol=rtol, atol=rtol * 1e-2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("bad", "nonfinite"), [(0.0, False), (float("nan"), True), (float("inf"), True), (-float("inf"), True)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_perturb_guard(dtype, bad, nonfinite):
    n = 3000
    theta = torch.randn(n, dtype=dtype)
    v = torch.zeros(n, dtype=dtype) if bad == 0.0 else torch.randn(n, dtype=dtype)
    v[1234] = bad
    out, eps, flag = (t.cpu() for t in triton_perturb.perturb_pair(theta.to(DEVICE), v.to(DEVICE), 0.01))
    assert eps.item() == 0.0
    assert bool(flag) is nonfinite
    assert torch.equal(out[0], theta) and torch.equal(out[1], theta)
    ref_out, ref_eps, ref_flag = reference.perturb_pair(theta, v, 0.01)
    assert torch.equal(out, ref_out) and bool(ref_flag) is nonfinite


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy, under the interpreter
def test_perturb_overflowing_sum_of_squares_is_rescaled_like_the_reference():
    """Finite entries whose float32 sum of squares overflows: ||v|| is recomputed scaled by max |v_i|,
    and eps is r / ||v||, unflagged, as in the reference."""
    theta = torch.randn(100)
    v = torch.full((100,), 1e20)
    out, eps, flag = (t.cpu() for t in triton_perturb.perturb_pair(theta.to(DEVICE), v.to(DEVICE), 0.01))
    ref_out, ref_eps, ref_flag = reference.perturb_pair(theta, v, 0.01)
    assert not bool(flag) and not bool(ref_flag)
    assert math.isclose(eps.item(), 0.01 / 1e21, rel_tol=2e-6) and math.isclose(
        eps.item(), ref_eps.item(), rel_tol=2e-6
    )
    torch.testing.assert_close(out, ref_out, rtol=2e-6, atol=1e-6)


def test_perturb_repeat_runs_are_bitwise_identical():
    theta = torch.randn(5000)
    v = torch.randn(5000)
    first = triton_perturb.perturb_pair(theta.to(DEVICE), v.to(DEVICE), 0.03)
    second = triton_perturb.perturb_pair(theta.to(DEVICE), v.to(DEVICE), 0.03)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
