"""Forward + backward of the BLADES multi-task loss: the plain-autograd baseline against every
fused backend, per device, at B = 48, 256, 1024.

    python -m pytest --benchmark benchmarks/bench_multitask_loss.py

One benchmark group per (device, B), so pytest-benchmark prints the implementations side by side;
the ratios to the baseline are printed at the end. Each benchmark records its peak memory (bytes
above what was live before the call) in extra_info. The fused calls skip the label-value check
(one host sync), as the trainer does for labels validated when the dataset was loaded. Triton's
CPU interpreter is not benchmarked.
"""

from __future__ import annotations

import pytest
import torch

import bfdkern
from benchmarks.baselines import loss_forward_backward
from benchmarks.memory import peak_bytes
from benchmarks.reporting import implementation_params, print_after_module
from bfdkern.ops import dispatch
from bfdkern.tasks import blades_spec
from tests.helpers import random_inputs

BATCHES = (48, 256, 1024)
IMPLEMENTATIONS = ("baseline", "cpp", "cuda", "triton")
_medians: dict[tuple[str, int], dict[str, float]] = {}


def fused_forward_backward(logits, targets, weights, spec, backend):
    """The public op: per_task, and the gradient of the weighted total w.r.t. the logits."""
    x = logits.detach().requires_grad_(True)
    per_task, total = bfdkern.multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)
    total.backward()
    return per_task.detach(), x.grad


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request):
    """Print median times and speedups over the baseline once the module's benchmarks ran."""
    yield
    print_after_module(request, lambda: bool(_medians), _write_table)


def _write_table(reporter) -> None:
    reporter.write_line("")
    reporter.write_line("multitask_loss forward+backward, BLADES spec: median time and speedup over the baseline")
    for (device, batch), row in sorted(_medians.items()):
        base = row.get("baseline")
        cells = [
            f"{impl} {t * 1e3:.3f} ms" + (f" ({base / t:.1f}x)" if base and impl != "baseline" else "")
            for impl, t in row.items()
        ]
        reporter.write_line(f"  {device} B={batch}: " + ", ".join(cells))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(("impl", "device"), list(implementation_params(IMPLEMENTATIONS)))
def test_multitask_loss(benchmark, impl, device, batch):
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if impl != "baseline" and (reason := dispatch.why_not(impl, dev)) is not None:
        pytest.skip(reason)
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, batch, seed=batch, dtype=torch.float32, device=dev)
    targets = targets.float()
    if impl == "baseline":
        work = lambda: loss_forward_backward(logits, targets, weights, spec)
    else:
        work = lambda: fused_forward_backward(logits, targets, weights, spec, impl)

    def run():
        out = work()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return out

    for _ in range(3):  # warm-up: first launches, Triton compiles, allocator
        run()
    benchmark.group = f"multitask_loss {device} B={batch}"
    benchmark.extra_info.update(
        {
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "batch": batch,
            "implementation": impl,
            "peak_bytes": peak_bytes(run, dev),
            "dtype": "float32",
        }
    )
    benchmark(run)
    _medians.setdefault((device, batch), {})[impl] = benchmark.stats.stats.median
