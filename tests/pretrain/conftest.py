"""Pretraining tests: torch on one thread (tiny models; two spinning threads on a shared 2-core machine only
slow them down) and a small simulated photo collection shared by the tests."""

import pytest

from bfdkern.data.simulator import simulate_collection
from tests.helpers import one_thread


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="package")
def photos(tmp_path_factory):
    """24 simulated camera photos (32 x 32 JPEGs with EXIF): 3 batches of 8 an epoch."""
    root = tmp_path_factory.mktemp("photos")
    simulate_collection(root, 24, seed=3, size=32, missing=0.1)
    return root
