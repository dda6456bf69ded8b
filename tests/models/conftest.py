"""Model tests run torch on one thread: their forwards are small, and on a shared 2-core machine two spinning
threads only slow them down."""

import pytest

from tests.helpers import one_thread


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    with one_thread():
        yield
