"""Triton kernels of the paired perturbation theta +- eps v (semantics of
:func:`bfdkern.ops.reference.perturb_pair`).

Two launches over a flat buffer, no host sync: a persistent norm pass (P programs, each the sum
of squares of its strided chunks of v) and a persistent elementwise pass in which every program
sums the same P partials in the same order, so all agree on ||v|| and the result is bitwise
repeatable, computes eps with the guard (||v|| = 0 or not finite: eps = 0, out = (theta, theta),
flag set) and writes both rows. Arithmetic in float64 for float64 theta, else float32.

v is read twice: eps depends on all of v before any output can be written, and a model's v does
not fit on chip. (Walking the second pass in reverse, so that the chunks of v read last by the
norm pass might still be in L2, with streaming hints on theta and the output, measured no gain
on an H100.)
"""

from __future__ import annotations

import functools
import struct

import torch
import triton
import triton.language as tl
from torch import Tensor

from bfdkern.ops.kernels.triton import interpreting
from bfdkern.ops.reference import compute_dtype


@triton.jit
def _sum_of_squares_kernel(v_ptr, partial_ptr, N, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    acc = tl.zeros([BLOCK], COMPUTE)
    for chunk in range(pid, tl.cdiv(N, BLOCK), programs):
        offs = chunk * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(v_ptr + offs, mask=offs < N, other=0.0).to(COMPUTE)
        acc += v * v
    tl.store(partial_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _perturb_kernel(
    theta_ptr,
    v_ptr,
    partial_ptr,
    out_ptr,
    eps_ptr,
    flag_ptr,
    N,
    P,
    radius_bits,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    ps = tl.arange(0, BLOCK_P)
    norm = tl.sqrt(tl.sum(tl.load(partial_ptr + ps, mask=ps < P, other=0.0), axis=0))
    finite = norm < float("inf")  # False for inf and NaN
    ok = finite & (norm > 0.0)
    radius = radius_bits.to(tl.float64, bitcast=True).to(COMPUTE)  # the exact float64 radius
    eps = tl.where(ok, radius / tl.where(ok, norm, 1.0), 0.0)
    if pid == 0:
        tl.store(eps_ptr, eps)
        tl.store(flag_ptr, (~finite).to(tl.uint8))
    for chunk in range(pid, tl.cdiv(N, BLOCK), programs):
        offs = chunk * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        t = tl.load(theta_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        step = eps * tl.where(ok, v, 0.0)  # eps = 0 and a NaN or inf in v: step 0, not NaN
        tl.store(out_ptr + offs, (t + step).to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(out_ptr + N + offs, (t - step).to(out_ptr.dtype.element_ty), mask=mask)


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _launch_shape(n: int, device: torch.device) -> tuple[int, int, int]:
    """(elements per chunk, programs, warps). A GPU gets a few programs per SM looping over
    chunks; the interpreter, which pays per program, gets few."""
    if interpreting() or device.type != "cuda":
        block = 1024
        return block, max(1, min(triton.cdiv(n, block), 4)), 4
    block = 4096
    sms = _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())
    return block, max(1, min(triton.cdiv(n, block), 4 * sms)), 8


def perturb_pair(theta: Tensor, v: Tensor, radius: float, out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(theta + eps v, theta - eps v) with eps = radius / ||v||, out of place, no host sync.

    Args:
        theta: [N] flat parameters (any float dtype).
        v: [N] flat direction.
        radius: r > 0.
        out: an optional [2, N] contiguous buffer in theta's dtype to write into.

    Returns:
        out [2, N] in theta's dtype, eps (0-dim, float64 for float64 theta else float32; 0 when
        ||v|| is 0 or not finite), nonfinite (0-dim bool: ||v|| is not finite).
    """
    theta = theta.contiguous()
    v = v.contiguous()
    dtype = compute_dtype(theta.dtype)
    compute = tl.float64 if dtype == torch.float64 else tl.float32
    n = theta.shape[0]
    block, programs, warps = _launch_shape(n, theta.device)
    partial = torch.empty(programs, dtype=dtype, device=theta.device)
    if out is None:
        out = torch.empty((2, n), dtype=theta.dtype, device=theta.device)
    eps = torch.empty((), dtype=dtype, device=theta.device)
    flag = torch.empty((), dtype=torch.uint8, device=theta.device)
    radius_bits = struct.unpack("<q", struct.pack("<d", float(radius)))[0]
    _sum_of_squares_kernel[(programs,)](v, partial, n, COMPUTE=compute, BLOCK=block, num_warps=warps)
    _perturb_kernel[(programs,)](
        theta,
        v,
        partial,
        out,
        eps,
        flag,
        n,
        programs,
        radius_bits,
        COMPUTE=compute,
        BLOCK=block,
        BLOCK_P=triton.next_power_of_2(programs),
        num_warps=warps,
    )
    return out, eps, flag.view(torch.bool)
