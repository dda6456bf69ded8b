"""The BLADES multi-task loss, the plain-autograd baseline against every fused backend, per device,
at B = 48, 256, 1024: forward + backward, and forward mode (the per-task losses and their
directional derivative along a random tangent, ``torch.func.jvp``, as the bi-level jvp mode runs it).

    python -m pytest --benchmark benchmarks/bench_multitask_loss.py

One benchmark group per (measure, device, B), so pytest-benchmark prints the implementations side by
side; the ratios to the baseline are printed at the end.

The C++ kernel's threads are also measured idle and under load: forward + backward on 1 and on 2
threads, alone and while two busy processes (started and stopped here, each ending itself after
BUSY_SECONDS at the latest) keep the cores occupied, as DataLoader workers do in training. Target: under
load the 2-thread time is at most 1.2x the 1-thread time; idle, 2 threads are not slower than before. Each benchmark records its peak memory (bytes
above what was live before the call) in extra_info. The fused calls skip the label-value check
(one host sync), as the trainer does for labels validated when the dataset was loaded. Triton's
CPU interpreter is not benchmarked.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time

import pytest
import torch

import bfdkern
from benchmarks.baselines import loss_forward_backward, loss_jvp
from benchmarks.memory import peak_bytes
from benchmarks.reporting import implementation_params, print_after_module
from bfdkern.ops import dispatch
from bfdkern.tasks import blades_spec
from tests.helpers import random_inputs

BATCHES = (48, 256, 1024)
IMPLEMENTATIONS = ("baseline", "cpp", "cuda", "triton")
MEASURES = {"forward+backward": "multitask_loss", "forward-mode jvp": "multitask_loss jvp"}
_medians: dict[tuple[str, str, int], dict[str, float]] = {}
LOADS = ("idle", "loaded")
BUSY_PROCESSES = 2
BUSY_SECONDS = 120
LOADED_RATIO_TARGET = 1.2
_thread_medians: dict[int, dict[tuple[str, int], float]] = {}


def fused_forward_backward(logits, targets, weights, spec, backend):
    """The public op: per_task, and the gradient of the weighted total w.r.t. the logits."""
    x = logits.detach().requires_grad_(True)
    per_task, total = bfdkern.multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)
    total.backward()
    return per_task.detach(), x.grad


def fused_jvp(logits, targets, weights, spec, backend, tangent):
    """The public op under torch.func.jvp: (per_task, per_task_dot) along ``tangent``."""

    def losses(x):
        return bfdkern.multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)[0]

    with torch.no_grad():
        return torch.func.jvp(losses, (logits,), (tangent,))


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request):
    """Print median times and speedups over the baseline once the module's benchmarks ran."""
    yield
    print_after_module(request, lambda: bool(_medians or _thread_medians), _write_table)


def _write_table(reporter) -> None:
    for measure in MEASURES:
        rows = {key[1:]: row for key, row in _medians.items() if key[0] == measure}
        if not rows:
            continue
        reporter.write_line("")
        reporter.write_line(f"multitask_loss {measure}, BLADES spec: median time and speedup over the baseline")
        for (device, batch), row in sorted(rows.items()):
            base = row.get("baseline")
            cells = [
                f"{impl} {t * 1e3:.3f} ms" + (f" ({base / t:.1f}x)" if base and impl != "baseline" else "")
                for impl, t in row.items()
            ]
            reporter.write_line(f"  {device} B={batch}: " + ", ".join(cells))
    if _thread_medians:
        reporter.write_line("")
        reporter.write_line(
            f"cpp forward+backward on 1 and 2 threads, idle and beside {BUSY_PROCESSES} busy processes "
            f"(median; target: loaded 2t / 1t <= {LOADED_RATIO_TARGET})"
        )
        for batch, row in sorted(_thread_medians.items()):
            cells = []
            for load in LOADS:
                one, two = row.get((load, 1)), row.get((load, 2))
                if one is None or two is None:
                    continue
                verdict = ("ok" if two / one <= LOADED_RATIO_TARGET else "MISSED") if load == "loaded" else ""
                cells.append(f"{load} 1t {one * 1e3:.3f} ms, 2t {two * 1e3:.3f} ms (2t/1t {two / one:.2f} {verdict})")
            reporter.write_line(f"  B={batch}: " + "; ".join(cells))


def _inputs(impl, device, batch):
    """(device, spec, logits, targets, weights) for a case, or skip with the reason."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if impl != "baseline" and (reason := dispatch.why_not(impl, dev)) is not None:
        pytest.skip(reason)
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, batch, seed=batch, dtype=torch.float32, device=dev)
    return dev, spec, logits, targets.float(), weights


def _measure(benchmark, measure, impl, dev, batch, work) -> None:
    """Warm up, record peak memory, time ``work`` and keep its median for the table."""

    def run():
        out = work()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return out

    for _ in range(3):  # warm-up: first launches, Triton compiles, allocator
        run()
    device = str(dev)
    benchmark.group = f"{MEASURES[measure]} {device} B={batch}"
    benchmark.extra_info.update(
        {
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "batch": batch,
            "implementation": impl,
            "measure": measure,
            "peak_bytes": peak_bytes(run, dev),
            "dtype": "float32",
        }
    )
    benchmark(run)
    _medians.setdefault((measure, device, batch), {})[impl] = benchmark.stats.stats.median


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(("impl", "device"), list(implementation_params(IMPLEMENTATIONS)))
def test_multitask_loss(benchmark, impl, device, batch):
    dev, spec, logits, targets, weights = _inputs(impl, device, batch)
    if impl == "baseline":
        work = lambda: loss_forward_backward(logits, targets, weights, spec)
    else:
        work = lambda: fused_forward_backward(logits, targets, weights, spec, impl)
    _measure(benchmark, "forward+backward", impl, dev, batch, work)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(("impl", "device"), list(implementation_params(IMPLEMENTATIONS)))
def test_multitask_loss_jvp(benchmark, impl, device, batch):
    dev, spec, logits, targets, weights = _inputs(impl, device, batch)
    tangent = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1)).to(dev)
    if impl == "baseline":
        work = lambda: loss_jvp(logits, targets, tangent, spec)
    else:
        work = lambda: fused_jvp(logits, targets, weights, spec, impl, tangent)
    _measure(benchmark, "forward-mode jvp", impl, dev, batch, work)


BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def busy_processes(count: int, seconds: float = BUSY_SECONDS):
    """``count`` processes spinning on a core each for the block (and for ``seconds`` at most)."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)]) for _ in range(count)]
    try:
        time.sleep(0.3 if procs else 0.0)  # let them start spinning
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("load", LOADS)
def test_cpp_threads_under_load(benchmark, load, batch):
    """The C++ forward + backward on 1 and on 2 threads, idle or beside BUSY_PROCESSES busy processes.
    The two thread counts alternate call by call (one benchmark round is one call of each, in turns
    first), so that both see the same load, which drifts on a shared machine."""
    dev, spec, logits, targets, weights = _inputs("cpp", "cpu", batch)
    samples: dict[int, list[float]] = {1: [], 2: []}
    rounds = [0]

    def pair():
        order = (1, 2) if rounds[0] % 2 == 0 else (2, 1)
        rounds[0] += 1
        for threads in order:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            fused_forward_backward(logits, targets, weights, spec, "cpp")
            samples[threads].append(time.perf_counter() - start)

    with busy_processes(BUSY_PROCESSES if load == "loaded" else 0), torch_threads(torch.get_num_threads()):
        for _ in range(3):
            pair()
        samples[1].clear(), samples[2].clear()
        benchmark.group = f"cpp 1 + 2 threads {load} B={batch}"
        benchmark(pair)
    medians = {threads: statistics.median(times) for threads, times in samples.items()}
    benchmark.extra_info.update(
        {"batch": batch, "load": load, "busy": BUSY_PROCESSES, **{f"median_{t}t": m for t, m in medians.items()}}
    )
    _thread_medians.setdefault(batch, {}).update({(load, t): m for t, m in medians.items()})
