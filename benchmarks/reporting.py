"""What the op benchmarks share: the (implementation, device) grid and a table printed after a
module's benchmarks, outside pytest's output capture."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

# Compiled backends that cannot serve a device at all (the others skip with their reason).
_IMPOSSIBLE = {("cpp", "cuda"), ("cuda", "cpu"), ("triton", "cpu")}


def implementation_params(implementations, cuda_only=()) -> Iterator:
    """pytest params (impl, device) over CPU and CUDA; CUDA cases carry the ``cuda`` marker.
    ``cuda_only`` implementations (a device copy, say) are measured on the GPU alone."""
    for device in ("cpu", "cuda"):
        impls = [*cuda_only, *implementations] if device == "cuda" else list(implementations)
        for impl in impls:
            if (impl, device) in _IMPOSSIBLE:
                continue
            marks = [pytest.mark.cuda] if device == "cuda" else []
            yield pytest.param(impl, device, marks=marks, id=f"{impl}-{device}")


def print_after_module(request, has_rows: Callable[[], bool], write: Callable) -> None:
    """Call ``write(terminalreporter)`` once the module's benchmarks ran (in a module fixture,
    after its ``yield``), when there is something to show."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not has_rows():
        return
    with capture.global_and_fixture_disabled():
        write(reporter)
