"""Communication of the bi-level step on torch.distributed: bytes all-reduced per step, against a plain
DistributedDataParallel weighted step, measured side by side on the CPU with gloo and two processes.

A plain DDP step all-reduces the gradient once (N values, counted by a DDP comm hook over its buckets).
The bi-level step (``BilevelTrainer``, counted by wrapping ``torch.distributed.all_reduce``) all-reduces
the gradient twice (the virtual step's and the real update's; once in the ``lagged`` order) plus v
(N values), and for the hypergradient itself only the per-task loss vectors L(theta+-) (2K numbers,
``fd``) or J v (K numbers, ``jvp``). The test asserts exactly that count and reports medians of the
step times.

Run with ``python -m pytest --benchmark benchmarks/bench_distributed.py -s``.
"""

from __future__ import annotations

import queue
import statistics
import time
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from bfdkern.bilevel import BilevelTrainer
from bfdkern.ops import multitask_loss
from bfdkern.tasks import blades_spec
from tests.helpers import random_targets

WORLD, BATCH, D_IN, HIDDEN, STEPS, WARMUP = 2, 16, 256, 512, 8, 2
JOIN_S = 300.0


def _model(spec) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(D_IN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, spec.num_columns)
    )


def _batch(spec, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH // WORLD, D_IN, generator=g)
    y = random_targets(spec, BATCH // WORLD, missing=0.1, generator=g).float()
    for k in spec.outer_indices:
        y[:, spec.target_columns(k)] = torch.randint(0, 2, (BATCH // WORLD, 1), generator=g).float()
    return x, y


class _AllReduceCounter:
    """Wraps torch.distributed.all_reduce: the size of every call of a step."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []  # (numel, bytes)
        self._orig = dist.all_reduce

    def __enter__(self):
        def counted(tensor, *args, **kw):
            self.calls.append((tensor.numel(), tensor.numel() * tensor.element_size()))
            return self._orig(tensor, *args, **kw)

        dist.all_reduce = counted
        return self

    def __exit__(self, *exc):
        dist.all_reduce = self._orig


def _plain_ddp(spec, rank: int) -> dict:
    model = nn.parallel.DistributedDataParallel(_model(spec))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    w = torch.ones(spec.num_tasks)
    sizes: list[int] = []

    def hook(state, bucket):
        sizes.append(bucket.buffer().numel() * bucket.buffer().element_size())
        return default_hooks.allreduce_hook(state, bucket)

    model.register_comm_hook(None, hook)
    times, per_step = [], []
    for s in range(WARMUP + STEPS):
        x, y = _batch(spec, 10 * s + rank)
        sizes.clear()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        per_task = multitask_loss(model(x), y, spec)[0]
        (w * per_task).sum().backward()
        opt.step()
        if s >= WARMUP:
            times.append(time.perf_counter() - t0)
            per_step.append(sum(sizes))
    return {"seconds": statistics.median(times), "bytes": per_step[-1], "calls": len(sizes)}


def _bilevel(spec, rank: int, **options) -> dict:
    model = _model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    trainer = BilevelTrainer(model, spec, opt, **options)
    times, calls = [], []
    for s in range(WARMUP + STEPS):
        tr, val = _batch(spec, 10 * s + rank), _batch(spec, 10 * s + rank + 5)
        with _AllReduceCounter() as counter:
            t0 = time.perf_counter()
            trainer.step(tr, val)
            dt = time.perf_counter() - t0
        if s >= WARMUP:
            times.append(dt)
            calls.append(counter.calls)
    last = calls[-1]
    n = trainer.layout.numel
    gradient = [b for numel, b in last if numel == n]
    other = [(numel, b) for numel, b in last if numel != n]
    return {
        "seconds": statistics.median(times),
        "bytes": sum(b for _, b in last),
        "gradient_reduces": len(gradient),
        "gradient_bytes": sum(gradient),
        "other_numbers": sum(numel for numel, _ in other),
        "other_bytes": sum(b for _, b in other),
        "n": n,
    }


def _worker(rank: int, tmp: str, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        spec = blades_spec()
        out = {
            "plain_ddp": _plain_ddp(spec, rank),
            "bilevel_fd": _bilevel(spec, rank, mode="fd"),
            "bilevel_fd_lagged": _bilevel(spec, rank, mode="fd", update_order="lagged"),
            "bilevel_jvp": _bilevel(spec, rank, mode="jvp"),
            "k": spec.num_tasks,
        }
        results.put((rank, "ok", out))
    except Exception:
        results.put((rank, "error", traceback.format_exc()))
        return
    dist.destroy_process_group()


def _launch(tmp) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(tmp), results)) for r in range(WORLD)]
    for p in procs:
        p.start()
    out = {}
    deadline = time.monotonic() + JOIN_S
    try:
        while len(out) < WORLD:
            try:
                rank, status, payload = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            assert status == "ok", f"rank {rank}: {payload}"
            out[rank] = payload
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    assert sorted(out) == list(range(WORLD)), f"ranks that reported: {sorted(out)}"
    return out[0]


@pytest.mark.benchmark(group="distributed")
def test_bytes_all_reduced_per_step(benchmark, tmp_path):
    r = benchmark.pedantic(_launch, args=(tmp_path,), rounds=1, iterations=1)
    k, plain = r["k"], r["plain_ddp"]
    n_bytes = plain["bytes"]
    print(f"\nall-reduced per step, {WORLD} ranks (gloo, CPU), N = {r['bilevel_fd']['n']} float32 parameters, K = {k}")
    print(
        f"{'step':<20}{'bytes':>12}{'x plain':>9}{'gradient all-reduces':>22}{'numbers beyond them':>21}"
        f"{'median s':>10}{'x plain':>9}"
    )
    print(f"{'plain DDP':<20}{n_bytes:>12}{1.0:>9.2f}{1:>22}{0:>21}{plain['seconds']:>10.4f}{1.0:>9.2f}")
    for name in ("bilevel_fd", "bilevel_fd_lagged", "bilevel_jvp"):
        b = r[name]
        print(
            f"{name:<20}{b['bytes']:>12}{b['bytes'] / n_bytes:>9.2f}{b['gradient_reduces']:>22}"
            f"{b['other_numbers']:>21}{b['seconds']:>10.4f}{b['seconds'] / plain['seconds']:>9.2f}"
        )
        benchmark.extra_info[name] = b
    benchmark.extra_info["plain_ddp"] = plain
    # DDP's buckets hold exactly the gradient: N float32 values.
    assert n_bytes == 4 * r["bilevel_fd"]["n"]
    # fd: g, v and the real update's gradient, and 2K loss values for L(theta+-).
    assert r["bilevel_fd"]["gradient_reduces"] == 3 and r["bilevel_fd"]["other_numbers"] == 2 * k
    assert r["bilevel_fd"]["bytes"] == 3 * n_bytes + 2 * k * 4
    # lagged: the virtual step's gradient is the real update: g and v only.
    assert r["bilevel_fd_lagged"]["gradient_reduces"] == 2 and r["bilevel_fd_lagged"]["other_numbers"] == 2 * k
    # jvp: J v is K numbers.
    assert r["bilevel_jvp"]["gradient_reduces"] == 3 and r["bilevel_jvp"]["other_numbers"] == k
