"""Special functions for the Triton kernels: erfc, expm1, log1p and a power, built from exp,
log and arithmetic only.

Triton's ``libdevice`` (erfc, expm1, log1p) compiles on a GPU but does not run under
``TRITON_INTERPRET=1``, so the kernels use these instead: one code path, tested on the CPU and
run on the GPU. ``FLOAT64`` (a constexpr) selects the float64 accuracy; float32 evaluates fewer terms.

erfc
    For z >= 0, erfc(z) = t exp(c(y) - z^2) with t = 2 / (2 + z) and y = 2t - 1 in (-1, 1],
    where c is a Chebyshev series for log(erfcx(z) / t) (the scaled form of Schonfelder 1978).
    Its coefficients come from Chebyshev interpolation at 80 nodes in 50-digit arithmetic
    (mpmath); 28 terms leave a truncation error below 3e-17, 14 terms below 1.5e-9. Measured
    against mpmath, the relative error of erfc is at most 12 units in the last place for z <= 5
    (float32 and float64) and grows as about z^2 / 2 units beyond, where the rounding of z^2
    inside exp dominates (float64, z = 24: 4e-14 relative on erfc = 1e-258); so deep in the tail
    only the size of erfc, never its last digits, can reach a loss.
"""

from __future__ import annotations

import triton
import triton.language as tl

ERFC_CHEBYSHEV = tl.constexpr(
    (
        -0.6513268598908547,
        0.6419697923564902,
        0.019476473204185836,
        -0.009561514786808632,
        -0.0009465953444820369,
        0.00036683949785276145,
        4.252332480690777e-05,
        -2.0278578112534242e-05,
        -1.6242900046470256e-06,
        1.3036558355805232e-06,
        1.5626441722066142e-08,
        -8.523809591492654e-08,
        6.5290544390988515e-09,
        5.059343495551469e-09,
        -9.91364156493033e-10,
        -2.273651222931836e-10,
        9.646791102015527e-11,
        2.3940380830391146e-12,
        -6.886027526497553e-12,
        8.944879273090725e-13,
        3.130921399342958e-13,
        -1.1270822361367252e-13,
        3.810905255189232e-16,
        7.106097613609237e-15,
        -1.5230282014571043e-15,
        -9.457494571291233e-17,
        1.210237189224279e-16,
        -2.816663087747177e-17,
    )
)
"""Chebyshev coefficients of log(erfcx(z) (2 + z) / 2) in y = (2 - z) / (2 + z)."""


@triton.jit
def erfc_nonneg(z, FLOAT64: tl.constexpr):
    """erfc(z) for z >= 0 (any z >= 0, +inf included), without the cancellation of 1 - erf."""
    N: tl.constexpr = 28 if FLOAT64 else 14
    t = 2.0 / (2.0 + z)
    y = 2.0 * t - 1.0
    y2 = 2.0 * y
    b1 = tl.zeros_like(z)
    b2 = tl.zeros_like(z)
    for k in tl.static_range(N - 1, 0, -1):  # Clenshaw
        b0 = y2 * b1 - b2 + ERFC_CHEBYSHEV[k]
        b2 = b1
        b1 = b0
    c = y * b1 - b2 + ERFC_CHEBYSHEV[0]
    return t * tl.exp(c - z * z)


@triton.jit
def one_minus_exp(u, FLOAT64: tl.constexpr):
    """1 - exp(u) = -expm1(u) for u <= 0, accurate when u is near 0 (Taylor series for |u| < 1/2)."""
    N: tl.constexpr = 16 if FLOAT64 else 9
    # expm1(u) = u (1 + u/2 (1 + u/3 (1 + ... (1 + u/N)))), Horner from the inside out.
    h = tl.full(u.shape, 1.0, u.dtype)
    for k in tl.static_range(N, 1, -1):
        h = 1.0 + u * h / k
    small = -u * h
    return tl.where(u > -0.5, small, 1.0 - tl.exp(u))


@triton.jit
def log1p_nonneg(w, FLOAT64: tl.constexpr):
    """log(1 + w) for w >= 0, accurate when w is small: 2 atanh(w / (2 + w)) as a series for
    w <= 1, log(1 + w) above (no cancellation there)."""
    N: tl.constexpr = 17 if FLOAT64 else 8
    r = w / (2.0 + w)
    r2 = r * r
    h = tl.zeros_like(w)
    for k in tl.static_range(N, 0, -1):
        h = h * r2 + 1.0 / (2 * k - 1)
    series = 2.0 * r * h
    big = tl.log(1.0 + tl.where(w > 1.0, w, 1.0))
    return tl.where(w > 1.0, big, series)


@triton.jit
def power_nonneg(a, e):
    """a^e for a >= 0 and a scalar exponent e, with a^0 = 1 (also at a = 0) and 0^e = 0 for e > 0."""
    pos = a > 0.0
    lg = tl.log(tl.where(pos, a, 1.0))
    value = tl.exp(e * lg)
    return tl.where(e == 0.0, 1.0, tl.where(pos, value, 0.0))
