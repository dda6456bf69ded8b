"""What does ``bfdkern pretrain --compile`` (torch.compile of the model's forward) buy on this machine's CPU?
The demo's setting (64 x 64 simulated photos, batch 32, the small backbone on one torch thread), one
bi-level step on batches already in memory, eager against compiled, for the ``fd`` and ``jvp`` modes
(``unroll`` refuses --compile: torch.compile does not support its double backward). The first compiled step
(compilation included) is reported beside the steady-state median.

Run with ``python -m pytest --benchmark benchmarks/bench_compile.py -s``. On a GPU the same comparison runs
as the ``cuda`` cases.
"""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks import bench_pretrain
from bfdkern.training import Pretraining

DEMO = bench_pretrain.DEMO
_one_thread = bench_pretrain._one_thread  # the demo setting's fixtures: one torch thread, its photos
photos = bench_pretrain.photos

_medians: dict[tuple[str, str, bool], float] = {}


def _cases():
    for device in ("cpu", "cuda"):
        marks = [pytest.mark.cuda] if device == "cuda" else []
        for mode in ("fd", "jvp"):
            for compiled in (False, True):
                name = f"{device}-{mode}-{'compiled' if compiled else 'eager'}"
                yield pytest.param(device, mode, compiled, marks=marks, id=name)


@pytest.mark.benchmark(group="compile")
@pytest.mark.parametrize("device, mode, compiled", _cases())
def test_step(benchmark, photos, tmp_path, device, mode, compiled):
    config = DEMO.pretrain_config(
        photos, epochs=1, workers=0, progress=False, mode=mode, compile=compiled, device=device
    )
    session = Pretraining(config, tmp_path / "run", spec=DEMO.spec(), echo=lambda m: None)
    batches = [session.streams["tr"].next() for _ in range(2)]
    session.model.train()

    def step():
        session.trainer.step(*batches)
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step()  # compiles when compiled
    first = time.perf_counter() - t0
    benchmark.pedantic(step, rounds=15, iterations=1, warmup_rounds=2)
    session.close()
    if benchmark.stats is None:
        return
    median = benchmark.stats.stats.median
    _medians[(device, mode, compiled)] = median
    benchmark.extra_info.update(first_step_s=round(first, 2), median_ms=round(1e3 * median, 1))
    line = f"\n{device} {mode} {'compiled' if compiled else 'eager'}: median step {1e3 * median:.1f} ms"
    line += f", first step {first:.1f} s"
    eager = _medians.get((device, mode, False))
    if compiled and eager is not None:
        line += f"; compiled / eager = {median / eager:.2f}"
    print(line)
