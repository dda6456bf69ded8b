"""Shared test setup: Triton's interpreter when no GPU is present, the shared real-data folder,
fresh random inputs for the task spec."""

import os

import pytest

try:
    import torch

    _HAS_GPU = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_GPU = False
if not _HAS_GPU:
    # Must be set before any @triton.jit decorator runs.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.helpers import shared_data_dir


def pytest_collection_modifyitems(config, items):
    if _HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Folder manifests (cached faces and EXIF) go to a temporary cache, never the user's ~/.cache."""
    os.environ["BFDKERN_CACHE_DIR"] = str(tmp_path_factory.mktemp("bfdkern-cache"))


@pytest.fixture
def shared_data():
    """Path of ../shared/data (or $BFDKERN_SHARED_DATA); skips the test when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared real data not present (set BFDKERN_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """24 simulated camera photos (32 x 32 JPEGs with EXIF): 3 batches of 8 an epoch (read only)."""
    from bfdkern.data.simulator import simulate_collection

    root = tmp_path_factory.mktemp("photos")
    simulate_collection(root, 24, seed=3, size=32, missing=0.1)
    return root
