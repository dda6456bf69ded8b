"""Loading the compiled extensions (``bfdkern._C``: C++ CPU kernels, always built;
``bfdkern._cuda``: CUDA kernels, built with a CUDA torch and toolkit).

The build records the torch version it was compiled against in ``bfdkern/_build_info.json``.
When the running torch differs, the compiled kernels are not loaded (an ABI mismatch can crash
the process); bfdkern warns once and serves from the reference and Triton backends.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import warnings
from pathlib import Path

import torch

_BUILD_INFO = Path(__file__).resolve().parent.parent / "_build_info.json"


def build_info() -> dict:
    """What setup.py recorded at build time ({} when nothing was built)."""
    try:
        return json.loads(_BUILD_INFO.read_text())
    except (OSError, ValueError):
        return {}


@functools.cache
def _load(module: str) -> tuple[object | None, str | None]:
    """(module, None) when loaded, else (None, the reason it is unavailable)."""
    if os.environ.get("BFDKERN_NO_EXTENSIONS"):
        return None, "disabled by BFDKERN_NO_EXTENSIONS"
    info = build_info()
    built_against = info.get("torch")
    if built_against is None:
        return None, "bfdkern was installed without compiled extensions (no _build_info.json)"
    if built_against != torch.__version__:
        reason = (
            f"bfdkern's compiled kernels were built against torch {built_against} but torch "
            f"{torch.__version__} is running; rebuild with `pip install --no-build-isolation .`"
        )
        _warn_once(reason)
        return None, reason
    if module == "_cuda" and not info.get("cuda"):
        return None, "the CUDA extension was not built (no CUDA torch or toolkit at build time)"
    if module == "_cuda":
        _load("_C")  # the CUDA kernels register under the schemas that _C defines
    try:
        loaded = importlib.import_module(f"bfdkern.{module}")
    except (ImportError, OSError) as exc:
        return None, f"bfdkern.{module} failed to load: {exc}"
    if module == "_C":
        importlib.import_module("bfdkern.ops.fake_kernels")
    return loaded, None


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message + " (serving from the reference and Triton backends)", RuntimeWarning, stacklevel=3)


def cpp_unavailable() -> str | None:
    """Why the C++ CPU kernels cannot serve, or None."""
    return _load("_C")[1]


def cuda_unavailable() -> str | None:
    """Why the CUDA kernels cannot serve, or None."""
    return _load("_cuda")[1]
