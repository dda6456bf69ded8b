"""The BLADES multi-task loss, the plain-autograd baseline against every fused backend, per device,
at B = 48, 256, 1024: forward + backward, and forward mode (the per-task losses and their
directional derivative along a random tangent, ``torch.func.jvp``, as the bi-level jvp mode runs it).

    python -m pytest --benchmark benchmarks/bench_multitask_loss.py

One benchmark group per (measure, device, B), so pytest-benchmark prints the implementations side by
side; the ratios to the baseline are printed at the end. Each benchmark records its peak memory (bytes
above what was live before the call) in extra_info. The fused calls skip the label-value check
(one host sync), as the trainer does for labels validated when the dataset was loaded. Triton's
CPU interpreter is not benchmarked.
"""

from __future__ import annotations

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
    print_after_module(request, lambda: bool(_medians), _write_table)


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
