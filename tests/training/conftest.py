"""Pretraining tests: torch on one thread (tiny models; two spinning threads on a shared 2-core machine only
slow them down). Their simulated photo collection is tests/conftest.py's ``photos``."""

import pytest

from tests.helpers import one_thread


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    with one_thread():
        yield
