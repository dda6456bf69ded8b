"""Detection tests run torch and BLAS on one thread: their arrays are small, and on a shared 2-core machine
two threads spinning at every small op made an MLP fit 20x and a 768x768 Cholesky 30x slower."""

import pytest

from tests.helpers import one_thread


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    with one_thread():
        yield
