"""perturb_pair throughput on a ResNet-50-sized flat buffer (N = 25.6M), per backend and device,
against the plain-torch reference.

    python -m pytest --benchmark benchmarks/bench_perturb.py

GB/s counts the bytes the op must move: theta read once, v read twice (norm, then the update) and
the two output rows written, in their dtypes. On CUDA a device-to-device copy of the same byte
count is measured alongside, as the bandwidth ceiling, and every implementation is also timed
back to back with CUDA events (device time without the per-call launch overhead). Triton's CPU
interpreter is not benchmarked.
"""

from __future__ import annotations

import pytest
import torch

import bfdkern
from benchmarks.memory import peak_bytes
from benchmarks.reporting import implementation_params, print_after_module
from bfdkern.ops import dispatch, reference

N = 25_557_032  # parameters of torchvision's ResNet-50
IMPLEMENTATIONS = ("reference", "cpp", "cuda", "triton")
_results: dict[str, dict[str, dict[str, float]]] = {}


def traffic_bytes(theta: torch.Tensor, v: torch.Tensor) -> int:
    """Bytes the op must move: read theta, read v twice, write 2 N in theta's dtype."""
    n = theta.numel()
    return n * (3 * theta.element_size() + 2 * v.element_size())


@pytest.fixture(scope="module", autouse=True)
def bandwidth_table(request):
    """Print GB/s per implementation once the module's benchmarks ran."""
    yield
    print_after_module(request, lambda: bool(_results), _write_table)


def _write_table(reporter) -> None:
    reporter.write_line("")
    reporter.write_line(f"perturb_pair, N = {N:,} float32: median time and effective bandwidth")
    for device, rows in sorted(_results.items()):
        copy = rows.get("copy", {}).get("back-to-back GB/s")
        for impl, row in rows.items():
            line = f"  {device} {impl}: {row['median'] * 1e3:.3f} ms a call = {row['GB/s']:.1f} GB/s"
            if "back-to-back GB/s" in row:
                line += f"; back to back {row['back-to-back GB/s']:.1f} GB/s"
                if copy and impl != "copy":
                    line += f" ({row['back-to-back GB/s'] / copy:.0%} of the copy)"
            reporter.write_line(line)


@pytest.mark.parametrize(("impl", "device"), list(implementation_params(IMPLEMENTATIONS, cuda_only=["copy"])))
def test_perturb_pair(benchmark, impl, device):
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if impl not in ("reference", "copy") and (reason := dispatch.why_not(impl, dev)) is not None:
        pytest.skip(reason)
    g = torch.Generator(device=dev).manual_seed(0)
    theta = torch.randn(N, generator=g, device=dev)
    v = torch.randn(N, generator=g, device=dev) * 1e-3
    nbytes = traffic_bytes(theta, v)
    if impl == "copy":
        src = torch.empty(nbytes // 8, dtype=torch.float32, device=dev)  # read + write = nbytes
        dst = torch.empty_like(src)
        work = lambda: dst.copy_(src)
    elif impl == "reference":
        work = lambda: reference.perturb_pair(theta, v, 0.01)
    else:
        work = lambda: bfdkern.perturb_pair(theta, v, 0.01, backend=impl)

    def run():
        out = work()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return out

    for _ in range(2):
        run()
    benchmark.group = f"perturb_pair {device} N={N}"
    benchmark.extra_info.update(
        {
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "n": N,
            "bytes": nbytes,
            "implementation": impl,
            "peak_bytes": peak_bytes(run, dev),
        }
    )
    benchmark(run)
    median = benchmark.stats.stats.median
    gbs = nbytes / median / 1e9
    benchmark.extra_info["GB/s"] = gbs
    row = {"median": median, "GB/s": gbs}
    if dev.type == "cuda":
        # The timed call above includes its launch and Python overhead; back to back, the host runs
        # ahead and the device time alone is measured.
        row["back-to-back GB/s"] = benchmark.extra_info["back-to-back GB/s"] = nbytes / device_seconds(work) / 1e9
    _results.setdefault(device, {})[impl] = row


def device_seconds(work, calls: int = 50) -> float:
    """Seconds per call of `work` issued back to back on the current CUDA stream (CUDA events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        work()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / calls
