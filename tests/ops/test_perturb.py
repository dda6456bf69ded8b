"""bfdkern.perturb_pair on every backend against the reference, on fresh random inputs."""

from __future__ import annotations

import math

import pytest
import torch

import bfdkern
from bfdkern.ops import reference
from tests.ops.backends import backend_params, interpreted, require

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(params=backend_params())
def target(request):
    """(backend, device) that can serve, else skipped with the reason."""
    backend, device = request.param
    return backend, require(backend, device, "perturb")


def fresh(n: int, theta_dtype, v_dtype=None, device="cpu"):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    theta = torch.randn(n, generator=g, dtype=torch.float64).to(theta_dtype)
    v = (torch.randn(n, generator=g, dtype=torch.float64) * 1e-3).to(v_dtype or theta_dtype)
    return theta.to(device), v.to(device)


def check(theta, v, radius, backend):
    """The op against the definition: rows theta +- eps v, eps = r / ||v||, theta untouched."""
    before = theta.clone()
    out, eps, nonfinite = bfdkern.perturb_pair(theta, v, radius, backend=backend)
    ct = reference.compute_dtype(theta.dtype)
    n = theta.shape[0]
    assert out.shape == (2, n) and out.dtype == theta.dtype and out.device == theta.device
    assert eps.shape == () and eps.dtype == ct
    assert nonfinite.shape == () and nonfinite.dtype == torch.bool
    assert torch.equal(theta, before)
    norm = torch.linalg.vector_norm(v.cpu().double()).item()
    assert not nonfinite.item()
    want_eps = radius / norm if norm > 0 else 0.0
    # The compiled kernels sum ||v||^2 in double; the others may sum float32 in float32.
    rel = 1e-12 if ct == torch.float64 else (2e-6 if backend in ("cpp", "cuda") else 5e-5)
    assert math.isclose(eps.item(), want_eps, rel_tol=rel)
    # Each element: theta +- eps v from the op's own eps, within an ulp of the operands: a kernel may
    # round eps v before the sum (no fused multiply-add), which shows where theta and eps v cancel.
    t, d, e = theta.cpu().double(), v.cpu().double(), eps.item()
    plus, minus = (t + e * d).to(theta.dtype), (t - e * d).to(theta.dtype)
    ulp = torch.finfo(theta.dtype).eps
    bound = ulp * (t.abs() + abs(e) * d.abs()) + torch.finfo(theta.dtype).tiny
    for got, want in ((out[0].cpu(), plus), (out[1].cpu(), minus)):
        error = (got.double() - want.double()).abs()
        worst = int(torch.argmax(error / bound))
        assert (error <= bound).all(), f"element {worst}: {got[worst].item()} vs {want[worst].item()}"
    ref_out, ref_eps, ref_flag = reference.perturb_pair(theta.cpu(), v.cpu(), radius)
    # eps itself may differ from the reference's in its last bit: compare on the scale of theta.
    scale = t.abs().max().item()
    torch.testing.assert_close(out.cpu().double(), ref_out.double(), rtol=2 * ulp, atol=2 * ulp * scale)
    assert ref_flag.item() == nonfinite.item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1000, 4099])
def test_matches_definition(target, dtype, n):
    backend, device = target
    theta, v = fresh(n, dtype, device=device)
    check(theta, v, 0.01, backend)


@pytest.mark.parametrize(
    ("theta_dtype", "v_dtype"),
    [
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float64),
        (torch.float32, torch.bfloat16),
        (torch.float64, torch.float32),
    ],
)
def test_mixed_dtypes(target, theta_dtype, v_dtype):
    """v is read in the compute dtype of theta, whatever its own dtype."""
    backend, device = target
    theta, v = fresh(1029, theta_dtype, v_dtype, device=device)
    check(theta, v, 0.05, backend)


def test_large_buffer(target):
    """Many blocks of the norm reduction, and a length that is no multiple of any vector width."""
    backend, device = target
    if interpreted(backend, device):
        pytest.skip("the Triton interpreter is slow: small buffers only")
    theta, v = fresh((1 << 20) + 13, torch.float32, device=device)
    check(theta, v, 0.01, backend)


def test_unaligned_views(target):
    """Buffers that start off a 16-byte boundary (the CUDA kernel falls back to scalar accesses)."""
    backend, device = target
    theta, v = fresh(3001, torch.float32, device=device)
    check(theta[1:], v[:-1], 0.01, backend)
    check(theta[:-1], v[1:], 0.01, backend)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_direction(target, dtype):
    backend, device = target
    theta, _ = fresh(513, dtype, device=device)
    out, eps, nonfinite = bfdkern.perturb_pair(theta, torch.zeros_like(theta), backend=backend)
    assert eps.item() == 0.0 and not nonfinite.item()
    assert torch.equal(out[0], theta) and torch.equal(out[1], theta)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_direction(target, bad):
    """A NaN or Inf in v: eps = 0, both rows are theta (no NaN leaks through 0 * NaN), flag set."""
    backend, device = target
    theta, v = fresh(777, torch.float32, device=device)
    v[100] = bad
    before = theta.clone()
    out, eps, nonfinite = bfdkern.perturb_pair(theta, v, backend=backend)
    assert eps.item() == 0.0 and nonfinite.item()
    assert torch.equal(out[0], theta) and torch.equal(out[1], theta)
    assert torch.equal(theta, before)


# Magnitudes of v by compute dtype: tiny and huge but with a representable norm (a naive sum of
# squares in the compute dtype under- or overflows), and a norm that is itself out of range.
TINY = {torch.float32: 1e-30, torch.float64: 1e-200}
HUGE = {torch.float32: 1e30, torch.float64: 1e200}
SUBNORMAL = {torch.float32: 1e-45, torch.float64: 5e-324}
OVERFLOWING = {torch.float32: 3e38, torch.float64: 1e308}


# The Triton interpreter runs the kernels in numpy, which warns where a sum of squares overflows (as
# these inputs make it, on purpose) or a NaN meets a multiply.
INTERPRETER_WARNINGS = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")


@INTERPRETER_WARNINGS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", ["tiny", "huge"])
def test_tiny_and_huge_directions_get_their_eps(target, dtype, size):
    """||v|| from a scaled norm: v ~ 1e-30 or 1e30 in float32 (1e-200, 1e200 in float64) gets
    eps = r / ||v||, no flag, finite rows, on every backend as in the reference."""
    backend, device = target
    theta, v = fresh(1001, dtype, device=device)
    v = v / v.abs().max() * (TINY if size == "tiny" else HUGE)[dtype]
    out, eps, nonfinite = bfdkern.perturb_pair(theta, v, 0.01, backend=backend)
    scale = v.abs().max().double().cpu()
    want = 0.01 / (scale * torch.linalg.vector_norm(v.double().cpu() / scale)).item()
    assert not nonfinite.item()
    assert math.isclose(eps.item(), want, rel_tol=1e-12 if dtype == torch.float64 else 2e-6)
    assert torch.isfinite(out).all()
    ref_out, ref_eps, ref_flag = reference.perturb_pair(theta.cpu(), v.cpu(), 0.01)
    assert not ref_flag.item()
    assert math.isclose(ref_eps.item(), eps.item(), rel_tol=1e-12 if dtype == torch.float64 else 2e-6)
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(out.cpu(), ref_out, rtol=2 * ulp, atol=2 * ulp * theta.abs().max().item())


@INTERPRETER_WARNINGS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["subnormal", "one subnormal", "overflowing norm", "overflowing eps"])
def test_out_of_range_norm_is_refused(target, dtype, case):
    """A ||v|| below the smallest normal number (a subnormal v), one above the largest, or an eps
    that overflows: eps = 0, both rows theta, the flag, on every backend as in the reference."""
    backend, device = target
    theta, _ = fresh(333, dtype, device=device)
    v = torch.zeros_like(theta)
    radius = 0.01
    if case == "subnormal":
        v[:] = SUBNORMAL[dtype]
    elif case == "one subnormal":
        v[17] = -SUBNORMAL[dtype]
    elif case == "overflowing norm":
        v[:] = OVERFLOWING[dtype]
    else:  # a normal ||v|| just above the smallest normal number, and radius / ||v|| beyond the largest
        v[5] = torch.finfo(dtype).tiny * 1.5
        radius = 100.0
    out, eps, nonfinite = bfdkern.perturb_pair(theta, v, radius, backend=backend)
    assert eps.item() == 0.0 and nonfinite.item(), (eps.item(), nonfinite.item())
    assert torch.equal(out[0], theta) and torch.equal(out[1], theta)
    _, ref_eps, ref_flag = reference.perturb_pair(theta.cpu(), v.cpu(), radius)
    assert ref_eps.item() == 0.0 and ref_flag.item()


def test_no_host_sync_needed(target):
    """eps and the flag come back as device tensors (the caller decides when to read them)."""
    backend, device = target
    theta, v = fresh(64, torch.float32, device=device)
    out, eps, nonfinite = bfdkern.perturb_pair(theta, v, backend=backend)
    assert out.device == eps.device == nonfinite.device == theta.device


def test_opcheck_public_op(target):
    backend, device = target
    theta, v = fresh(300, torch.float32, device=device)
    torch.library.opcheck(torch.ops.bfdkern.perturb_pair.default, (theta, v, 0.01, backend))


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)])
def test_opcheck_compiled_op(device):
    dev = require("cpp" if device == "cpu" else "cuda", device, "perturb")
    for theta_dtype, v_dtype in (
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float64, torch.float64),
    ):
        theta, v = fresh(1000, theta_dtype, v_dtype, device=dev)
        torch.library.opcheck(torch.ops.bfdkern_C.perturb_pair.default, (theta, v, 0.01))


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)])
def test_compiled_op_repeat_bitwise(device):
    dev = require("cpp" if device == "cpu" else "cuda", device, "perturb")
    theta, v = fresh(300_007, torch.float32, device=dev)
    first = torch.ops.bfdkern_C.perturb_pair(theta, v, 0.01)
    again = torch.ops.bfdkern_C.perturb_pair(theta, v, 0.01)
    for x, y in zip(first, again):
        assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_out_workspace_matches_fresh_output(target, dtype):
    """out=: the same values as a fresh output, written into the caller's buffer (poisoned first,
    so an unwritten entry shows), which is returned as the first result; reusable next call."""
    backend, device = target
    buf = torch.full((2, 2053), float("nan"), dtype=dtype, device=device)
    for _ in range(2):  # the second call writes another theta and v into the same buffer
        theta, v = fresh(2053, dtype, torch.float32, device=device)
        want, want_eps, want_flag = bfdkern.perturb_pair(theta, v, 0.02, backend=backend)
        out, eps, flag = bfdkern.perturb_pair(theta, v, 0.02, backend=backend, out=buf)
        assert out.data_ptr() == buf.data_ptr()
        assert torch.equal(out, want) and torch.equal(eps, want_eps) and torch.equal(flag, want_flag)


def test_out_workspace_with_nonfinite_direction(target):
    backend, device = target
    theta, v = fresh(300, torch.float32, device=device)
    v[7] = float("nan")
    buf = torch.full((2, 300), float("nan"), device=device)
    out, eps, flag = bfdkern.perturb_pair(theta, v, backend=backend, out=buf)
    assert flag.item() and eps.item() == 0.0
    assert torch.equal(buf[0], theta) and torch.equal(buf[1], theta)


def test_bad_out_workspace(target):
    backend, device = target
    theta, v = fresh(10, torch.float32, device=device)
    both = torch.empty(3, 10, device=device)
    cases = [
        (torch.empty(10, device=device), "out must be \\[2, 10\\]"),
        (torch.empty(2, 11, device=device), "out must be \\[2, 10\\]"),
        (torch.empty(2, 10, dtype=torch.float64, device=device), "out must be torch.float32 like theta"),
        (torch.empty(2, 10, device="meta"), "out on meta"),
        (torch.empty(10, 2, device=device).t(), "out must be contiguous"),
        (both[:2], None),  # a contiguous slice is fine
    ]
    for out, message in cases:
        if message is None:
            bfdkern.perturb_pair(theta, v, backend=backend, out=out)
            continue
        with pytest.raises(ValueError, match=message):
            bfdkern.perturb_pair(theta, v, backend=backend, out=out)
    alias = torch.empty(30, device=device)
    with pytest.raises(ValueError, match="out overlaps theta"):
        bfdkern.perturb_pair(alias[:10], v, backend=backend, out=alias[5:25].view(2, 10))
    with pytest.raises(ValueError, match="out overlaps v"):
        bfdkern.perturb_pair(theta, alias[15:25], backend=backend, out=alias[:20].view(2, 10))


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)])
def test_opcheck_compiled_out_op(device):
    dev = require("cpp" if device == "cpu" else "cuda", device, "perturb")
    for theta_dtype, v_dtype in ((torch.float32, torch.float32), (torch.bfloat16, torch.float32)):
        theta, v = fresh(1000, theta_dtype, v_dtype, device=dev)
        out = torch.empty(2, 1000, dtype=theta_dtype, device=dev)
        torch.library.opcheck(torch.ops.bfdkern_C.perturb_pair_out.default, (theta, v, 0.01, out))


def test_compiled_out_op_checks_its_workspace():
    require("cpp", "cpu", "perturb")
    theta, v = fresh(10, torch.float32)
    with pytest.raises(ValueError, match="out must be \\[2, 10\\]"):
        torch.ops.bfdkern_C.perturb_pair_out(theta, v, 0.01, torch.empty(2, 9))
    buf = torch.empty(40)
    with pytest.raises(ValueError, match="out overlaps"):
        torch.ops.bfdkern_C.perturb_pair_out(buf[:10], v, 0.01, buf[:20].view(2, 10))


def test_bad_input(target):
    backend, device = target
    theta, v = fresh(10, torch.float32, device=device)
    cases = [
        ((theta.reshape(2, 5), v.reshape(2, 5), 0.01), "flat \\[N\\] buffer"),
        ((theta, v[:-1], 0.01), "differ in shape"),
        ((theta.to(torch.int64), v, 0.01), "theta must be floating point"),
        ((theta, v.to("meta"), 0.01), "theta on .* but v on meta"),
        ((theta, v, 0.0), "radius must be > 0"),
        ((theta, v, float("nan")), "radius must be > 0"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            bfdkern.perturb_pair(*args, backend=backend)


def test_compiled_op_checks_its_inputs():
    require("cpp", "cpu", "perturb")
    theta, v = fresh(10, torch.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        torch.ops.bfdkern_C.perturb_pair(theta, v[:-1], 0.01)
    with pytest.raises(ValueError, match="radius must be > 0"):
        torch.ops.bfdkern_C.perturb_pair(theta, v, -1.0)
