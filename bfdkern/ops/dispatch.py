"""Backend choice, in one place.

By device and what is built: CUDA tensors -> ``cuda``, else ``triton``, else ``reference``;
CPU tensors -> ``cpp``, else ``reference``. ``BFDKERN_BACKEND=reference|cpp|cuda|triton``
or an explicit ``backend=`` overrides; asking for a backend that cannot serve raises an error
listing why each backend cannot.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from bfdkern.ops import extension

BACKENDS = ("reference", "cpp", "cuda", "triton")


class BackendUnavailable(RuntimeError):
    """No requested backend can serve these inputs; the message lists every reason."""


@functools.cache
def _triton_unavailable_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    return None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def why_not(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot serve tensors on ``device`` (None when it can)."""
    if backend == "reference":
        return None
    if backend == "cpp":
        if device.type != "cpu":
            return f"the C++ kernels run on CPU tensors, got {device}"
        return extension.cpp_unavailable()
    if backend == "cuda":
        if device.type != "cuda":
            return f"the CUDA kernels run on CUDA tensors, got {device}"
        return extension.cuda_unavailable()
    if backend == "triton":
        reason = _triton_unavailable_reason()
        if reason:
            return reason
        if device.type == "cuda" or (device.type == "cpu" and _interpreting()):
            return None
        return f"Triton runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {device}"
    return f"unknown backend {backend!r}; choose one of {BACKENDS}"


@torch.compiler.assume_constant_result  # torch.compile: a constant choice, not traced
def select(device: torch.device, requested: str | None = None) -> str:
    """The backend for tensors on ``device``: ``requested`` (or ``$BFDKERN_BACKEND``) if given,
    else the fastest that can serve."""
    requested = requested or os.environ.get("BFDKERN_BACKEND") or None
    if requested is not None:
        if requested not in BACKENDS:
            raise BackendUnavailable(f"unknown backend {requested!r}; choose one of {BACKENDS}")
        reason = why_not(requested, device)
        if reason is None:
            return requested
        reasons = "\n".join(f"  {b}: {why_not(b, device) or 'available'}" for b in BACKENDS)
        raise BackendUnavailable(f"backend {requested!r} cannot serve {device} tensors: {reason}\n{reasons}")
    order = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpp", "reference")
    for b in order:
        if why_not(b, device) is None:
            return b
    raise AssertionError("the reference backend always serves")  # pragma: no cover


def available(device: torch.device) -> list[str]:
    """Every backend that can serve tensors on ``device``."""
    return [b for b in BACKENDS if why_not(b, device) is None]
