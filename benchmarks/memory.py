"""Peak memory of one call, for benchmark.extra_info: CUDA from the caching allocator's peak, CPU
from the profiler's record of torch allocations (tracemalloc does not see them)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of live torch CPU allocations made during fn() (bytes above those alive before it).
    Memory a C++ kernel takes with its own allocator (std::vector scratch) is not seen."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = []
    for event in prof.events():
        # "[memory]" records happen outside any op; an op's own (self) allocations are counted at its start.
        change = event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        if change:
            records.append((event.time_range.start, change))
    live = peak = 0
    for _, change in sorted(records):
        live += change
        peak = max(peak, live)
    return peak


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak of CUDA memory allocated during fn() above what was allocated before it."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory of fn() on `device` (see cpu_peak_bytes / cuda_peak_bytes)."""
    return cuda_peak_bytes(fn, device) if device.type == "cuda" else cpu_peak_bytes(fn)
