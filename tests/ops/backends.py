"""Backend parametrisation shared by the op tests: every backend on the device it serves."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from bfdkern.ops import BACKENDS, dispatch

# (backend, device) pairs worth testing: the reference and Triton on both devices (Triton on the CPU
# under TRITON_INTERPRET=1), the C++ kernels on the CPU, the CUDA kernels on the GPU.
PAIRS = [(b, d) for b in BACKENDS for d in ("cpu", "cuda") if (b, d) not in {("cpp", "cuda"), ("cuda", "cpu")}]


def backend_params() -> list:
    """Fixture params, each a (backend, device) tuple; the CUDA ones carry the ``cuda`` marker."""
    return [pytest.param((b, d), id=f"{b}-{d}", marks=[pytest.mark.cuda] if d == "cuda" else []) for b, d in PAIRS]


def require(backend: str, device: str, triton_module: str) -> torch.device:
    """The device, or skip: with why_not's reason, or because the Triton kernels are not there."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend == "triton" and importlib.util.find_spec(f"bfdkern.ops.kernels.triton.{triton_module}") is None:
        pytest.skip(f"bfdkern.ops.kernels.triton.{triton_module} is not there")
    reason = dispatch.why_not(backend, dev)
    if reason is not None:
        pytest.skip(reason)
    return dev


def interpreted(backend: str, device: torch.device) -> bool:
    """Triton under its (slow) CPU interpreter: tests keep such inputs small."""
    return backend == "triton" and device.type == "cpu"
