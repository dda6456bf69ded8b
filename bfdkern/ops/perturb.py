"""``perturb_pair``: the paired finite-difference perturbation theta +- eps v, one registered op.

Over all parameters at once (a flat buffer): ||v|| is computed on the device (no host sync), scaled
by max |v_i| when its plain sum of squares under- or overflows, eps = radius / ||v|| with one guard on
every backend (v not finite, ||v|| not a normal number of the compute dtype, or eps overflowing:
eps = 0 and the flag, unless v is zero), and theta+ and theta- are written out of place in one pass;
theta is never modified.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bfdkern.ops import dispatch, reference
from bfdkern.ops.validate import check_perturb_inputs, check_perturb_out


@torch.library.custom_op("bfdkern::perturb_pair", mutates_args=())
def _perturb_pair_op(theta: Tensor, v: Tensor, radius: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return dispatch.ensure_loaded(backend, theta.device).perturb(theta.contiguous(), v.contiguous(), radius)


@_perturb_pair_op.register_fake
def _(theta, v, radius, backend):
    dtype = reference.compute_dtype(theta.dtype)
    return (
        theta.new_empty((2, theta.shape[0])),
        theta.new_empty((), dtype=dtype),
        theta.new_empty((), dtype=torch.bool),
    )


def perturb_pair(
    theta: Tensor, v: Tensor, radius: float = 0.01, *, backend: str | None = None, out: Tensor | None = None
):
    """theta +- eps v with eps = radius / ||v||, out of place, in one pass.

    Args:
        theta: [N] flat parameters.
        v: [N] flat direction.
        radius: r (the paper's 0.01).
        backend: ``reference`` | ``cpp`` | ``cuda`` | ``triton``; default by device.
        out: an optional [2, N] contiguous workspace in theta's dtype, not overlapping theta or v,
            written and returned as the first result. A caller that perturbs every step keeps one:
            a fresh N-sized output costs page faults on the CPU each time.

    Returns:
        out [2, N] in theta's dtype (row 0 = theta + eps v, row 1 = theta - eps v), eps (0-dim,
        float32 or float64), nonfinite (0-dim bool): no eps could be formed for a non-zero v (it
        holds a NaN or Inf, or ||v|| or r / ||v|| under- or overflows the compute dtype). eps is 0,
        and out = (theta, theta), then and when v is zero.
    """
    check_perturb_inputs(theta, v, radius)
    if out is not None:
        check_perturb_out(theta, v, out)
    chosen = dispatch.select(theta.device, backend)
    if torch.compiler.is_compiling():
        pair, eps, nonfinite = _perturb_pair_op(theta, v, float(radius), chosen.name)
        return (pair if out is None else out.copy_(pair)), eps, nonfinite
    # Eager: call the kernel directly; the custom op's dispatcher round trip costs more than it.
    return chosen.perturb(theta.contiguous(), v.contiguous(), float(radius), out)
