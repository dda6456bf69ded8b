"""Which torch device a run uses: the user's choice checked against what this machine has, in one place,
so every command and API that takes a device fails the same clear way (not deep inside CUDA's lazy init)."""

from __future__ import annotations

import os

import torch


def _no_cuda() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) was built without CUDA; use cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = "" if visible is None else f", CUDA_VISIBLE_DEVICES={visible!r}"
    return f"torch {torch.__version__} sees no CUDA GPU (no GPU, or no working NVIDIA driver{hidden}); use cpu"


def device_problem(device: str | torch.device) -> str | None:
    """Why ``device`` cannot be used on this machine (one line), or None when it can: a name torch does not
    know, a CUDA or MPS device this machine does not have, a CUDA index beyond the visible GPUs."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        return "not a device torch knows; use cpu, cuda, cuda:1, ..."
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return _no_cuda()
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"only {count} CUDA GPU(s) are visible (cuda:0 .. cuda:{count - 1})"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return "this machine has no usable Apple MPS device; use cpu"
    return None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The :class:`torch.device` that ``device`` names (None: ``cuda`` when a GPU is visible, else ``cpu``);
    ValueError ``device 'NAME': why`` when this machine cannot use it (see :func:`device_problem`)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(device)
    if problem is not None:
        raise ValueError(f"device {str(device)!r}: {problem}")
    return torch.device(device)
