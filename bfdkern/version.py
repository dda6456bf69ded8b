"""The installed bfdkern's version, from its package metadata (one place: pyproject.toml). A module of its
own so that only ``--version`` and ``bfdkern.__version__`` pay for importlib.metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bfdkern")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
