"""How long `bfdkern --help` and every `bfdkern COMMAND --help` take, each in a fresh interpreter (what a user
waits for): the target is under 0.5 s. Parsing and help import no torch (tests/test_cli.py checks that); this
measures the wall time, interpreter start included.

Run with ``python -m pytest --benchmark benchmarks/bench_startup.py -s``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bfdkern.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.5


@pytest.mark.benchmark(group="startup")
@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMANDS)], ids=" ".join)
def test_help(benchmark, argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run():
        subprocess.run([sys.executable, "-m", "bfdkern", *argv], env=env, capture_output=True, check=True)

    benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:
        return
    median = benchmark.stats.stats.median
    print(f"\nbfdkern {' '.join(argv)}: {1e3 * median:.0f} ms (target < {1e3 * TARGET_S:.0f} ms)")
    assert median < TARGET_S
