"""Detection tests run torch and BLAS on one thread: their arrays are small, and on a shared 2-core machine
two threads spinning at every small op made an MLP fit 20x and a 768x768 Cholesky 30x slower."""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
