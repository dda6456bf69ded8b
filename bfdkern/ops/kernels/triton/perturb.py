"""Triton kernels of the paired perturbation theta +- eps v (semantics of
:func:`bfdkern.ops.reference.perturb_pair`).

Three launches over a flat buffer, no host sync: a persistent norm pass (P programs, each the sum
of squares and the largest |v_i| of its strided chunks of v); a rescaled pass, which runs only when
the plain sum of squares cannot be trusted (it under- or overflowed the compute dtype:
:func:`bfdkern.ops.reference.trusted_sum_of_squares`) and then sums (v / max |v_i|)^2; and a
persistent elementwise pass. Every program of the later passes sums the same P partials in the same
order, so all agree on ||v|| and the result is bitwise repeatable; the last computes eps with the
guard of :func:`bfdkern.ops.reference.usable_norm` (else eps = 0, out = (theta, theta), and the
flag unless v is zero) and writes both rows. Arithmetic in float64 for float64 theta, else float32.

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
from bfdkern.ops.reference import compute_dtype, trusted_sum_of_squares


@triton.jit
def _sum_of_squares_kernel(v_ptr, partial_ptr, top_ptr, N, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """partial[pid] = sum of v^2 over the program's chunks; top[pid] = max |v|, inf for a NaN or inf."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    acc = tl.zeros([BLOCK], COMPUTE)
    top = tl.zeros([BLOCK], COMPUTE)
    for chunk in range(pid, tl.cdiv(N, BLOCK), programs):
        offs = chunk * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(v_ptr + offs, mask=offs < N, other=0.0).to(COMPUTE)
        acc += v * v
        top = tl.maximum(top, tl.where(v == v, tl.abs(v), float("inf")))
    tl.store(partial_ptr + pid, tl.sum(acc, axis=0))
    tl.store(top_ptr + pid, tl.max(top, axis=0))


@triton.jit
def _plain_norm(partial_ptr, top_ptr, P, trusted, BLOCK_P: tl.constexpr):
    """(sqrt of the plain sum of squares, whether it can be trusted, max |v_i| (inf: v not finite))
    from the P partials, summed in a fixed order."""
    ps = tl.arange(0, BLOCK_P)
    total = tl.sum(tl.load(partial_ptr + ps, mask=ps < P, other=0.0), axis=0)
    top = tl.max(tl.load(top_ptr + ps, mask=ps < P, other=0.0), axis=0)
    return tl.sqrt(total), (total < float("inf")) & (total >= trusted), top


@triton.jit
def _scaled_sum_of_squares_kernel(
    v_ptr, partial_ptr, top_ptr, scaled_ptr, N, P, trusted_bits, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
    BLOCK_P: tl.constexpr,
):  # fmt: skip
    """scaled[pid] = sum of (v / max |v_i|)^2 over the program's chunks, when the plain sum cannot be
    trusted and v is finite and not zero; else nothing is read."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    trusted = trusted_bits.to(tl.float64, bitcast=True).to(COMPUTE)
    _, plain_ok, top = _plain_norm(partial_ptr, top_ptr, P, trusted, BLOCK_P)
    acc = tl.zeros([BLOCK], COMPUTE)
    if (~plain_ok) & (top < float("inf")) & (top > 0.0):
        for chunk in range(pid, tl.cdiv(N, BLOCK), programs):
            offs = chunk * BLOCK + tl.arange(0, BLOCK)
            v = tl.load(v_ptr + offs, mask=offs < N, other=0.0).to(COMPUTE) / top
            acc += v * v
    tl.store(scaled_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _perturb_kernel(
    theta_ptr,
    v_ptr,
    partial_ptr,
    top_ptr,
    scaled_ptr,
    out_ptr,
    eps_ptr,
    flag_ptr,
    N,
    P,
    radius_bits,
    trusted_bits,
    tiny_bits,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    trusted = trusted_bits.to(tl.float64, bitcast=True).to(COMPUTE)
    plain, plain_ok, top = _plain_norm(partial_ptr, top_ptr, P, trusted, BLOCK_P)
    ps = tl.arange(0, BLOCK_P)
    finite = top < float("inf")
    scaled = tl.where(finite, top, 0.0) * tl.sqrt(tl.sum(tl.load(scaled_ptr + ps, mask=ps < P, other=0.0), axis=0))
    norm = tl.where(plain_ok, plain, tl.where(finite, scaled, top))
    radius = radius_bits.to(tl.float64, bitcast=True).to(COMPUTE)  # the exact float64 radius
    tiny = tiny_bits.to(tl.float64, bitcast=True).to(COMPUTE)  # the compute dtype's smallest normal
    eps_raw = radius / tl.where(norm > 0.0, norm, 1.0)
    ok = (norm < float("inf")) & (norm >= tiny) & (eps_raw < float("inf"))  # False for NaN too
    eps = tl.where(ok, eps_raw, 0.0)
    if pid == 0:
        tl.store(eps_ptr, eps)
        tl.store(flag_ptr, ((~ok) & (top != 0.0)).to(tl.uint8))
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
        out [2, N] in theta's dtype, eps (0-dim, float64 for float64 theta else float32), nonfinite
        (0-dim bool), as :func:`bfdkern.ops.reference.perturb_pair` defines them.
    """
    theta = theta.contiguous()
    v = v.contiguous()
    dtype = compute_dtype(theta.dtype)
    compute = tl.float64 if dtype == torch.float64 else tl.float32
    n = theta.shape[0]
    block, programs, warps = _launch_shape(n, theta.device)
    partials = torch.empty((3, programs), dtype=dtype, device=theta.device)  # sums, maxima, scaled sums
    if out is None:
        out = torch.empty((2, n), dtype=theta.dtype, device=theta.device)
    eps = torch.empty((), dtype=dtype, device=theta.device)
    flag = torch.empty((), dtype=torch.uint8, device=theta.device)
    bits = {
        "radius_bits": _float64_bits(radius),
        "trusted_bits": _float64_bits(trusted_sum_of_squares(n, dtype)),
        "tiny_bits": _float64_bits(torch.finfo(dtype).tiny),
    }
    shape = {"COMPUTE": compute, "BLOCK": block, "num_warps": warps}
    block_p = triton.next_power_of_2(programs)
    sums, maxima, scaled = partials
    _sum_of_squares_kernel[(programs,)](v, sums, maxima, n, **shape)
    _scaled_sum_of_squares_kernel[(programs,)](
        v, sums, maxima, scaled, n, programs, bits["trusted_bits"], BLOCK_P=block_p, **shape
    )
    _perturb_kernel[(programs,)](
        theta, v, sums, maxima, scaled, out, eps, flag, n, programs, **bits, BLOCK_P=block_p, **shape
    )
    return out, eps, flag.view(torch.bool)


def _float64_bits(x: float) -> int:
    """A float as the int64 of its float64 bits: kernel arguments keep every digit (a float argument
    would be passed as float32)."""
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]
