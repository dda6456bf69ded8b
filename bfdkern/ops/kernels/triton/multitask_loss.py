"""Triton kernels of the fused multi-task pretext loss (forward and backward).

Semantics are those of :func:`bfdkern.ops.reference.per_task_losses`; the layout is that of
:mod:`bfdkern.tasks` (logits [B, C], targets [B, J], NaN = missing).

Launches. Forward: one for all ordinal tasks, one for all categorical / binary / multilabel
tasks, one tiny finalize. Backward: the same two (each writes its tasks' columns of the gradient).

* Ordinal (Thurstone pairwise ranking). No B x B tensor: program (i-block, task) owns a block of
  rows i and loops over every j. The loss of the ordered pair (j, i) equals that of (i, j) (x -> -x,
  g -> 1 - g swaps p and q), so the sum over ordered pairs i != j is exactly twice the sum over
  i < j; the gradient of s_i is the sum over j of d loss(i, j) / d s_i. No atomics.
* Per-sample tasks: program (row block, task) computes log p_y (log-softmax, or log-sigmoid per
  multilabel column) and the focal fidelity loss from it.
* Reductions are deterministic: each program writes its partial sum and count to a [2, K, blocks]
  buffer, summed in a fixed order by the finalize kernel, so repeat runs are bitwise identical.

Arithmetic runs in float64 for float64 logits, else float32 (half types are loaded and upcast).
Phi and 1 - Phi both come from erfc of |x| (no cancellation for large |x|); sqrt(p_y) is
exp(log p_y / 2) and 1 - p_y is -expm1(log p_y), so logits of +-1e4 stay finite.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from bfdkern.ops.kernels.triton import interpreting
from bfdkern.ops.kernels.triton.special import erfc_nonneg, log1p_nonneg, one_minus_exp, power_nonneg
from bfdkern.ops.reference import compute_dtype
from bfdkern.tasks import KIND_CODES, KernelLayout

ORDINAL = tl.constexpr(KIND_CODES["ordinal"])
MULTILABEL = tl.constexpr(KIND_CODES["multilabel"])
META_WIDTH = tl.constexpr(4)
"""Columns of the int task table: kind, first logit column, logit columns, first target column."""
PARAMS_WIDTH = tl.constexpr(3)
"""Columns of the float task table: gamma, sigma, delta."""

SQRT_HALF = tl.constexpr(1.0 / math.sqrt(2.0))
INV_SQRT_2PI = tl.constexpr(1.0 / math.sqrt(2.0 * math.pi))


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------
@triton.jit
def _load_task(task_meta_ptr, task_params_ptr, ids_ptr, slot):
    """The task a program serves: (k, kind, first column, columns, first target, gamma, sigma, delta)."""
    k = tl.load(ids_ptr + slot)
    kind = tl.load(task_meta_ptr + k * META_WIDTH)
    col0 = tl.load(task_meta_ptr + k * META_WIDTH + 1)
    ncol = tl.load(task_meta_ptr + k * META_WIDTH + 2)
    tgt0 = tl.load(task_meta_ptr + k * META_WIDTH + 3)
    gamma = tl.load(task_params_ptr + k * PARAMS_WIDTH)
    sigma = tl.load(task_params_ptr + k * PARAMS_WIDTH + 1)
    delta = tl.load(task_params_ptr + k * PARAMS_WIDTH + 2)
    return k, kind, col0, ncol, tgt0, gamma, sigma, delta


@triton.jit
def _ordinal_scores(logits_ptr, rows, rmask, C, col0, ncol, COMPUTE: tl.constexpr, BLOCK_L: tl.constexpr):
    """Scores [BLOCK] of an ordinal task and, for L level columns, the softmax [BLOCK, BLOCK_L]:
    s = z_0 when L = 1, else the expected level sum_l l softmax_l."""
    if BLOCK_L == 1:
        s = tl.load(logits_ptr + rows * C + col0, mask=rmask, other=0.0).to(COMPUTE)
        prob = tl.zeros([rows.shape[0], 1], COMPUTE)
    else:
        lv = tl.arange(0, BLOCK_L)
        lmask = lv[None, :] < ncol
        z = tl.load(logits_ptr + rows[:, None] * C + col0 + lv[None, :], mask=rmask[:, None] & lmask, other=0.0)
        z = tl.where(lmask, z.to(COMPUTE), float("-inf"))
        ex = tl.exp(z - tl.max(z, axis=1)[:, None])
        prob = ex / tl.sum(ex, axis=1)[:, None]
        expected = tl.sum(prob * lv[None, :].to(COMPUTE), axis=1)
        first = tl.sum(tl.where(lv[None, :] == 0, z, 0.0), axis=1)
        s = tl.where(ncol == 1, first, expected)
    return s, prob


@triton.jit
def _thurstone_pairs(s_i, y_i, s_j, y_j, sigma, delta, FLOAT64: tl.constexpr):
    """For the tile of ordered pairs (i, j): x = (s_i - s_j) / sigma, p = Phi(x), q = 1 - p, the
    target g (1, 0, 0.5 for a tie) and the fidelity loss 1 - sqrt(p g + d) - sqrt(q (1 - g) + d)."""
    x = (s_i[:, None] - s_j[None, :]) / sigma
    half_tail = 0.5 * erfc_nonneg(tl.abs(x) * SQRT_HALF, FLOAT64)  # Phi(-|x|)
    p = tl.where(x >= 0.0, 1.0 - half_tail, half_tail)
    q = tl.where(x >= 0.0, half_tail, 1.0 - half_tail)
    yi = y_i[:, None]
    yj = y_j[None, :]
    g = tl.where(yi > yj, 1.0, tl.where(yi < yj, 0.0, 0.5))
    root_p = tl.sqrt(p * g + delta)
    root_q = tl.sqrt(q * (1.0 - g) + delta)
    loss = 1.0 - root_p - root_q
    return x, g, root_p, root_q, loss


@triton.jit
def _fidelity(u, gamma, FLOAT64: tl.constexpr):
    """Focal fidelity loss (1 - p)^gamma (1 - sqrt p) from u = log p, and its derivative in u."""
    p = tl.exp(u)
    root = tl.exp(0.5 * u)
    one_minus_p = one_minus_exp(u, FLOAT64)
    focal = power_nonneg(one_minus_p, gamma)
    base = 1.0 - root
    loss = focal * base
    # d/du: (1-p)^gamma' = -gamma (1-p)^(gamma-1) p; (1 - sqrt p)' = -sqrt(p) / 2.
    dfocal = tl.where(gamma == 0.0, 0.0, gamma * power_nonneg(one_minus_p, gamma - 1.0) * p)
    dloss = -dfocal * base - 0.5 * focal * root
    return loss, dloss


@triton.jit
def _per_sample_logprob(z, y, cols, cmask, kind, ncol, FLOAT64: tl.constexpr):
    """log p of the label per cell, the cells that count, and what the backward needs.

    z, y: [BLOCK_B, BLOCK_C] logits and targets of one task (targets beyond the task's target
    columns read as NaN). Categorical / binary: the cell of column 0 stands for the row, log p_y
    from a log-softmax, aux = softmax. Multilabel: every column, log sigmoid(+-z), aux = d u / d z.
    """
    present = y == y
    if kind == MULTILABEL:
        sign = tl.where(y > 0.5, 1.0, -1.0)
        x = sign * z
        w = tl.exp(-tl.abs(x))
        u = tl.minimum(x, 0.0) - log1p_nonneg(w, FLOAT64)
        aux = sign * tl.where(x > 0.0, w / (1.0 + w), 1.0 / (1.0 + w))  # sign * sigmoid(-x)
        valid = present & cmask
    else:
        zc = tl.where(cmask, z, float("-inf"))
        zmax = tl.max(zc, axis=1)
        top = (zc == zmax[:, None]) & cmask
        ex = tl.exp(zc - zmax[:, None])
        # sum_c exp(z_c - max) = 1 + rest, rest without one maximal column: log1p keeps log p_y
        # accurate when p_y is near 1.
        rest = tl.sum(tl.where(top, 0.0, ex), axis=1) + (tl.sum(top.to(z.dtype), axis=1) - 1.0)
        label = tl.sum(tl.where(cols[None, :] == 0, tl.where(present, y, 0.0), 0.0), axis=1).to(tl.int32)
        z_label = tl.sum(tl.where(cols[None, :] == label[:, None], z, 0.0), axis=1)
        u_row = (z_label - zmax) - log1p_nonneg(rest, FLOAT64)
        u = tl.where(cols[None, :] == 0, u_row[:, None], 0.0)
        aux = ex / (1.0 + rest)[:, None]
        valid = present & (cols[None, :] == 0)
    return u, valid, aux


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------
@triton.jit
def _ordinal_forward_kernel(
    logits_ptr,
    targets_ptr,
    task_meta_ptr,
    task_params_ptr,
    ids_ptr,
    partial_ptr,
    B,
    C,
    J,
    K,
    NB,
    COMPUTE: tl.constexpr,
    FLOAT64: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0)
    k, kind, col0, ncol, tgt0, gamma, sigma, delta = _load_task(
        task_meta_ptr, task_params_ptr, ids_ptr, tl.program_id(1)
    )
    rows_i = pid * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = rows_i < B
    s_i, prob_i = _ordinal_scores(logits_ptr, rows_i, mask_i, C, col0, ncol, COMPUTE, BLOCK_L)
    y_i = tl.load(targets_ptr + rows_i * J + tgt0, mask=mask_i, other=float("nan")).to(COMPUTE)
    present_i = y_i == y_i
    acc = tl.zeros([BLOCK_I, BLOCK_J], COMPUTE)
    for j0 in range(0, B, BLOCK_J):
        rows_j = j0 + tl.arange(0, BLOCK_J)
        mask_j = rows_j < B
        s_j, prob_j = _ordinal_scores(logits_ptr, rows_j, mask_j, C, col0, ncol, COMPUTE, BLOCK_L)
        y_j = tl.load(targets_ptr + rows_j * J + tgt0, mask=mask_j, other=float("nan")).to(COMPUTE)
        x, g, root_p, root_q, loss = _thurstone_pairs(s_i, y_i, s_j, y_j, sigma, delta, FLOAT64)
        valid = present_i[:, None] & (y_j == y_j)[None, :] & (rows_i[:, None] != rows_j[None, :])
        acc += tl.where(valid, loss, 0.0)
    tl.store(partial_ptr + k * NB + pid, tl.sum(tl.sum(acc, axis=1), axis=0))
    tl.store(partial_ptr + (K + k) * NB + pid, tl.sum(present_i.to(COMPUTE), axis=0))


@triton.jit
def _per_sample_forward_kernel(
    logits_ptr,
    targets_ptr,
    task_meta_ptr,
    task_params_ptr,
    ids_ptr,
    partial_ptr,
    B,
    C,
    J,
    K,
    NB,
    COMPUTE: tl.constexpr,
    FLOAT64: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    k, kind, col0, ncol, tgt0, gamma, sigma, delta = _load_task(
        task_meta_ptr, task_params_ptr, ids_ptr, tl.program_id(1)
    )
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_C)
    rmask = rows < B
    cmask = cols[None, :] < ncol
    ntgt = tl.where(kind == MULTILABEL, ncol, 1)
    z = tl.load(logits_ptr + rows[:, None] * C + col0 + cols[None, :], mask=rmask[:, None] & cmask, other=0.0)
    tmask = rmask[:, None] & (cols[None, :] < ntgt)
    y = tl.load(targets_ptr + rows[:, None] * J + tgt0 + cols[None, :], mask=tmask, other=float("nan"))
    u, valid, _ = _per_sample_logprob(z.to(COMPUTE), y.to(COMPUTE), cols, cmask, kind, ncol, FLOAT64)
    loss, _ = _fidelity(u, gamma, FLOAT64)
    total = tl.sum(tl.sum(tl.where(valid, loss, 0.0), axis=1), axis=0)
    count = tl.sum(tl.sum(valid.to(COMPUTE), axis=1), axis=0)
    tl.store(partial_ptr + k * NB + pid, total)
    tl.store(partial_ptr + (K + k) * NB + pid, count)


@triton.jit
def _finalize_kernel(
    partial_ptr,
    task_meta_ptr,
    weights_ptr,
    per_task_ptr,
    total_ptr,
    K,
    NB,
    COMPUTE: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_NB: tl.constexpr,
):
    """per_task_k = sum / count (ordinal: sum over ordered pairs / (n (n - 1))), 0 without a
    valid sample or pair; total = sum_k w_k per_task_k. One program, fixed summation order."""
    ks = tl.arange(0, BLOCK_K)
    kmask = ks < K
    sums = tl.zeros([BLOCK_K, BLOCK_NB], COMPUTE)
    counts = tl.zeros([BLOCK_K, BLOCK_NB], COMPUTE)
    for b0 in range(0, NB, BLOCK_NB):
        bs = b0 + tl.arange(0, BLOCK_NB)
        m = kmask[:, None] & (bs[None, :] < NB)
        sums += tl.load(partial_ptr + ks[:, None] * NB + bs[None, :], mask=m, other=0.0)
        counts += tl.load(partial_ptr + (K + ks[:, None]) * NB + bs[None, :], mask=m, other=0.0)
    s = tl.sum(sums, axis=1)
    n = tl.sum(counts, axis=1)
    kind = tl.load(task_meta_ptr + ks * META_WIDTH, mask=kmask, other=MULTILABEL)
    denom = tl.where(kind == ORDINAL, n * (n - 1.0), n)
    loss = tl.where(denom > 0.0, s / tl.where(denom > 0.0, denom, 1.0), 0.0)
    w = tl.load(weights_ptr + ks, mask=kmask, other=0.0).to(COMPUTE)
    tl.store(per_task_ptr + ks, loss, mask=kmask)
    tl.store(total_ptr, tl.sum(tl.where(kmask, w * loss, 0.0), axis=0))


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------
@triton.jit
def _ordinal_backward_kernel(
    grad_ptr,
    logits_ptr,
    targets_ptr,
    task_meta_ptr,
    task_params_ptr,
    ids_ptr,
    out_ptr,
    B,
    C,
    J,
    COMPUTE: tl.constexpr,
    FLOAT64: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0)
    k, kind, col0, ncol, tgt0, gamma, sigma, delta = _load_task(
        task_meta_ptr, task_params_ptr, ids_ptr, tl.program_id(1)
    )
    rows_i = pid * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = rows_i < B
    s_i, prob_i = _ordinal_scores(logits_ptr, rows_i, mask_i, C, col0, ncol, COMPUTE, BLOCK_L)
    y_i = tl.load(targets_ptr + rows_i * J + tgt0, mask=mask_i, other=float("nan")).to(COMPUTE)
    present_i = y_i == y_i
    acc = tl.zeros([BLOCK_I, BLOCK_J], COMPUTE)
    n = tl.zeros([BLOCK_J], COMPUTE)
    for j0 in range(0, B, BLOCK_J):
        rows_j = j0 + tl.arange(0, BLOCK_J)
        mask_j = rows_j < B
        s_j, prob_j = _ordinal_scores(logits_ptr, rows_j, mask_j, C, col0, ncol, COMPUTE, BLOCK_L)
        y_j = tl.load(targets_ptr + rows_j * J + tgt0, mask=mask_j, other=float("nan")).to(COMPUTE)
        present_j = y_j == y_j
        x, g, root_p, root_q, _ = _thurstone_pairs(s_i, y_i, s_j, y_j, sigma, delta, FLOAT64)
        # d loss / d x = phi(x) ((1 - g) / (2 sqrt(q (1 - g) + d)) - g / (2 sqrt(p g + d)))
        phi = tl.exp(-0.5 * x * x) * INV_SQRT_2PI
        dloss = 0.5 * phi * ((1.0 - g) / root_q - g / root_p)
        valid = present_i[:, None] & present_j[None, :] & (rows_i[:, None] != rows_j[None, :])
        acc += tl.where(valid, dloss, 0.0)
        n += present_j.to(COMPUTE)
    count = tl.sum(n, axis=0)
    pairs = 0.5 * count * (count - 1.0)
    upstream = tl.load(grad_ptr + k).to(COMPUTE)
    scale = tl.where(pairs > 0.0, upstream / (sigma * tl.where(pairs > 0.0, pairs, 1.0)), 0.0)
    ds = tl.sum(acc, axis=1) * scale
    if BLOCK_L == 1:
        tl.store(out_ptr + rows_i * C + col0, ds.to(out_ptr.dtype.element_ty), mask=mask_i)
    else:
        # s = sum_l l softmax_l: d s / d z_m = softmax_m (m - s); L = 1: d s / d z_0 = 1.
        lv = tl.arange(0, BLOCK_L)
        lmask = lv[None, :] < ncol
        dz = tl.where(ncol == 1, 1.0, prob_i * (lv[None, :].to(COMPUTE) - s_i[:, None])) * ds[:, None]
        tl.store(
            out_ptr + rows_i[:, None] * C + col0 + lv[None, :],
            dz.to(out_ptr.dtype.element_ty),
            mask=mask_i[:, None] & lmask,
        )


@triton.jit
def _per_sample_backward_kernel(
    grad_ptr,
    logits_ptr,
    targets_ptr,
    task_meta_ptr,
    task_params_ptr,
    ids_ptr,
    out_ptr,
    B,
    C,
    J,
    COMPUTE: tl.constexpr,
    FLOAT64: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    k, kind, col0, ncol, tgt0, gamma, sigma, delta = _load_task(
        task_meta_ptr, task_params_ptr, ids_ptr, tl.program_id(1)
    )
    cols = tl.arange(0, BLOCK_C)
    cmask = cols[None, :] < ncol
    ntgt = tl.where(kind == MULTILABEL, ncol, 1)
    tcols = cols[None, :] < ntgt
    # The mean runs over every labelled cell of the task: count them first (all rows).
    n = tl.zeros([BLOCK_B, BLOCK_C], COMPUTE)
    for r0 in range(0, B, BLOCK_B):
        rr = r0 + tl.arange(0, BLOCK_B)
        yy = tl.load(
            targets_ptr + rr[:, None] * J + tgt0 + cols[None, :], mask=(rr[:, None] < B) & tcols, other=float("nan")
        )
        n += (yy == yy).to(COMPUTE)
    count = tl.sum(tl.sum(n, axis=1), axis=0)
    upstream = tl.load(grad_ptr + k).to(COMPUTE)
    scale = tl.where(count > 0.0, upstream / tl.where(count > 0.0, count, 1.0), 0.0)

    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    z = tl.load(logits_ptr + rows[:, None] * C + col0 + cols[None, :], mask=rmask[:, None] & cmask, other=0.0)
    y = tl.load(targets_ptr + rows[:, None] * J + tgt0 + cols[None, :], mask=rmask[:, None] & tcols, other=float("nan"))
    u, valid, aux = _per_sample_logprob(z.to(COMPUTE), y.to(COMPUTE), cols, cmask, kind, ncol, FLOAT64)
    _, dloss = _fidelity(u, gamma, FLOAT64)
    dloss = tl.where(valid, dloss, 0.0) * scale
    if kind == MULTILABEL:
        dz = dloss * aux
    else:
        # d log p_y / d z_c = [c = y] - softmax_c; the row's dloss sits in column 0.
        yrow = tl.sum(tl.where(cols[None, :] == 0, tl.where(y == y, y, 0.0), 0.0), axis=1).to(tl.int32)
        onehot = (cols[None, :] == yrow[:, None]).to(COMPUTE)
        dz = tl.sum(dloss, axis=1)[:, None] * (onehot - aux)
    tl.store(
        out_ptr + rows[:, None] * C + col0 + cols[None, :], dz.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask
    )


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------
_TABLE_CACHE: dict = {}


def _task_tables(layout: KernelLayout, dtype: torch.dtype, device: torch.device) -> dict:
    """Device tensors describing the layout, built once per (layout, dtype, device) so that a call
    makes no host-to-device copy: task_meta int32 [K, META_WIDTH], task_params [K, PARAMS_WIDTH]
    (gamma, sigma, delta), the ordinal task ids and the per-sample task ids."""
    key = (layout, dtype, str(device))
    tables = _TABLE_CACHE.get(key)
    if tables is None:
        k = len(layout.kinds)
        task_meta = torch.tensor(
            list(zip(layout.kinds, layout.col_offsets, layout.col_counts, layout.target_offsets)), dtype=torch.int32
        )
        task_params = torch.tensor([[g, layout.sigma, layout.delta] for g in layout.gammas], dtype=torch.float64)
        ordinal = [i for i in range(k) if layout.kinds[i] == KIND_CODES["ordinal"]]
        per_sample = [i for i in range(k) if layout.kinds[i] != KIND_CODES["ordinal"]]
        max_l = max((layout.col_counts[i] for i in ordinal), default=1)
        max_c = max((layout.col_counts[i] for i in per_sample), default=1)
        tables = {
            "task_meta": task_meta.to(device),
            "task_params": task_params.to(dtype).to(device),
            "ordinal": torch.tensor(ordinal, dtype=torch.int32).to(device),
            "per_sample": torch.tensor(per_sample, dtype=torch.int32).to(device),
            "n_ordinal": len(ordinal),
            "n_per_sample": len(per_sample),
            "block_l": 1 if max_l == 1 else triton.next_power_of_2(max_l),
            "block_c": triton.next_power_of_2(max_c),
        }
        _TABLE_CACHE[key] = tables
    return tables


def _blocks(batch: int, float64: bool) -> tuple[int, int, int]:
    """(rows per program, pair-tile columns, warps) by batch size. The interpreter pays per
    program, so it gets the largest blocks; a GPU gets enough programs to fill its SMs."""
    size = triton.next_power_of_2(max(batch, 1))
    if interpreting():
        return min(max(size, 16), 128), min(max(size, 16), 256), 4
    rows = min(max(size, 16), 32)
    cols = min(max(size, 16), 32 if float64 else 64)
    return rows, cols, 4


def _launch_setup(logits: Tensor, layout: KernelLayout):
    """(task tables, compute dtype, row blocks, constexprs of the ordinal and per-sample kernels)."""
    dtype = compute_dtype(logits.dtype)
    float64 = dtype == torch.float64
    tables = _task_tables(layout, dtype, logits.device)
    rows, cols, warps = _blocks(logits.shape[0], float64)
    consts = {"COMPUTE": tl.float64 if float64 else tl.float32, "FLOAT64": float64, "num_warps": warps}
    ordinal = {"BLOCK_I": rows, "BLOCK_J": cols, "BLOCK_L": tables["block_l"], **consts}
    per_sample = {"BLOCK_B": rows, "BLOCK_C": tables["block_c"], **consts}
    return tables, dtype, triton.cdiv(logits.shape[0], rows), ordinal, per_sample


def forward(logits: Tensor, targets: Tensor, weights: Tensor, layout: KernelLayout) -> tuple[Tensor, Tensor]:
    """Per-task losses [K] and their weighted sum [] (float64 for float64 logits, else float32).

    Args:
        logits: [B, C] contiguous, any float dtype (half types are upcast in the kernel).
        targets: [B, J] contiguous float, NaN = missing.
        weights: [K] task weights, already in the compute dtype.
        layout: the task layout (:attr:`bfdkern.tasks.TaskSpec.layout`).
    """
    logits, targets = logits.contiguous(), targets.contiguous()
    tables, dtype, nb, ordinal, per_sample = _launch_setup(logits, layout)
    (b, c), j, k = logits.shape, targets.shape[1], len(layout.kinds)
    # Every (task, row block) slot is written by exactly one program.
    partial = torch.empty((2, k, nb), dtype=dtype, device=logits.device)
    task = (tables["task_meta"], tables["task_params"])
    if tables["n_ordinal"]:
        grid = (nb, tables["n_ordinal"])
        _ordinal_forward_kernel[grid](logits, targets, *task, tables["ordinal"], partial, b, c, j, k, nb, **ordinal)
    if tables["n_per_sample"]:
        grid = (nb, tables["n_per_sample"])
        _per_sample_forward_kernel[grid](
            logits, targets, *task, tables["per_sample"], partial, b, c, j, k, nb, **per_sample
        )
    per_task = torch.empty(k, dtype=dtype, device=logits.device)
    total = torch.empty((), dtype=dtype, device=logits.device)
    block_nb = min(triton.next_power_of_2(nb), 256)
    _finalize_kernel[(1,)](
        partial,
        tables["task_meta"],
        weights,
        per_task,
        total,
        k,
        nb,
        COMPUTE=ordinal["COMPUTE"],
        BLOCK_K=triton.next_power_of_2(k),
        BLOCK_NB=block_nb,
        num_warps=4,
    )
    return per_task, total


def backward(grad_per_task: Tensor, logits: Tensor, targets: Tensor, layout: KernelLayout) -> Tensor:
    """d (grad_per_task . per_task) / d logits: [B, C] in logits' dtype.

    Args:
        grad_per_task: [K] upstream gradient of the per-task vector (any values), compute dtype.
        logits, targets, layout: as for :func:`forward`.
    """
    logits, targets = logits.contiguous(), targets.contiguous()
    tables, dtype, nb, ordinal, per_sample = _launch_setup(logits, layout)
    upstream = grad_per_task.to(dtype).contiguous()
    (b, c), j = logits.shape, targets.shape[1]
    # Every column belongs to exactly one task, and each task's program writes all its columns.
    grad = torch.empty_like(logits)
    task = (tables["task_meta"], tables["task_params"])
    if tables["n_ordinal"]:
        grid = (nb, tables["n_ordinal"])
        _ordinal_backward_kernel[grid](upstream, logits, targets, *task, tables["ordinal"], grad, b, c, j, **ordinal)
    if tables["n_per_sample"]:
        grid = (nb, tables["n_per_sample"])
        _per_sample_backward_kernel[grid](
            upstream, logits, targets, *task, tables["per_sample"], grad, b, c, j, **per_sample
        )
    return grad
