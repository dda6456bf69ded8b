"""`bfdkern bench` reports repeated timed runs after a warm-up, so a cold first call cannot make its
figures or ratios."""

from __future__ import annotations

import dataclasses
import time

import torch

from bfdkern import cli
from bfdkern.commands import bench
from bfdkern.ops import backends
from tests.helpers import one_thread

COLD_SECONDS = 1.0


def test_measure_excludes_the_cold_call_and_repeats():
    calls = []

    def fn():
        calls.append(None)
        if len(calls) == 1:
            time.sleep(COLD_SECONDS)  # what a cold first call (allocator, compile, loading) looks like

    m = bench.measure(fn, torch.device("cpu"), min_time=0.05)
    assert len(calls) > 10  # warm-up, calibration and timed blocks
    assert m.number_per_run * len(m.times) >= 10
    assert m.median < COLD_SECONDS / 100  # the sleep is nowhere in the figure


def test_bench_ratio_ignores_a_cold_reference(monkeypatch, capsys):
    """The reference backend made slow on its first call only: the printed reference time and every
    speedup stay those of warm calls."""
    warm_forward = backends.BY_NAME["reference"].loss_forward
    state = {"cold": True}

    def cold_then_warm(*args):
        if state["cold"]:
            state["cold"] = False
            time.sleep(COLD_SECONDS)
        return warm_forward(*args)

    cold = dataclasses.replace(backends.BY_NAME["reference"], loss_forward=cold_then_warm)
    monkeypatch.setitem(backends.BY_NAME, "reference", cold)

    with one_thread():  # small torch ops on two threads crawl on a busy shared machine
        assert cli.main(["bench", "--batch", "6", "--device", "cpu", "--min-time", "0.2"]) == 0
    assert not state["cold"]  # the cold call happened
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("6 ")]
    by_backend = {r[1]: r for r in rows}
    assert "reference" in by_backend
    reference_ms = float(by_backend["reference"][2])
    assert reference_ms < COLD_SECONDS * 1e3 / 4
    for _, backend, median, _iqr, runs, speedup in rows:
        assert int(runs) >= 3, backend
        # The ratio is that of the two printed medians (to their printed rounding).
        ratio = reference_ms / float(median)
        rounding = 0.005 + ratio * (0.0005 / float(median) + 0.0005 / reference_ms)
        assert abs(float(speedup.rstrip("x")) - ratio) <= rounding, backend
