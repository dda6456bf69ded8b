"""Detection tests run torch on one thread: their tensors are small, and on a shared 2-core machine two
OpenMP threads spinning at every tiny op made an MLP fit 20x slower."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
