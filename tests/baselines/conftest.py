"""Baseline and ablation tests: torch on one thread and a tiny simulated photo collection."""

import pytest

from bfdkern.data.simulator import simulate_collection, simulate_uncamera
from tests.helpers import one_thread


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="package")
def eval_sets(tmp_path_factory):
    """Held-out real photos to fit on (16), to test on (12), and 12 camera-less faces (32 x 32)."""
    root = tmp_path_factory.mktemp("eval")
    simulate_collection(root / "fit", 16, seed=11, size=32)
    simulate_collection(root / "real", 12, seed=12, size=32)
    simulate_uncamera(root / "fake", 12, seed=13, size=32)
    return root
