"""Backend choice, in one place.

By device and what is built (the table in :mod:`bfdkern.ops.backends`): CUDA tensors -> ``cuda``,
else ``triton``, else ``reference``; CPU tensors -> ``cpp``, else ``reference``.
``BFDKERN_BACKEND=reference|cpp|cuda|triton`` or an explicit ``backend=`` overrides; asking for a
backend that cannot serve raises an error listing why each backend cannot.
"""

from __future__ import annotations

import os

import torch

from bfdkern.ops.backends import BACKENDS, BY_NAME, TABLE, Backend, picked_by_default


class BackendUnavailable(RuntimeError):
    """No requested backend can serve these inputs; the message lists every reason."""


def why_not(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot serve tensors on ``device`` (None when it can)."""
    entry = BY_NAME.get(backend)
    if entry is None:
        return f"unknown backend {backend!r}; choose one of {BACKENDS}"
    return entry.why_not(device)


@torch.compiler.assume_constant_result  # torch.compile: a constant choice, not traced
def _choose(device: torch.device, requested: str | None) -> str:
    requested = requested or os.environ.get("BFDKERN_BACKEND") or None
    if requested is not None:
        if requested not in BY_NAME:
            raise BackendUnavailable(f"unknown backend {requested!r}; choose one of {BACKENDS}")
        reason = why_not(requested, device)
        if reason is None:
            return requested
        reasons = "\n".join(f"  {b}: {why_not(b, device) or 'available'}" for b in BACKENDS)
        raise BackendUnavailable(f"backend {requested!r} cannot serve {device} tensors: {reason}\n{reasons}")
    candidates = sorted((b for b in TABLE if picked_by_default(b, device)), key=lambda b: b.priority)
    for b in candidates:
        if b.why_not(device) is None:
            return b.name
    raise AssertionError("the reference backend always serves")  # pragma: no cover


def select(device: torch.device, requested: str | None = None) -> Backend:
    """The backend for tensors on ``device``: ``requested`` (or ``$BFDKERN_BACKEND``) if given,
    else the fastest that can serve. Raises :class:`BackendUnavailable` (every backend's reason)
    when the requested one cannot."""
    return BY_NAME[_choose(device, requested)]


def ensure_loaded(backend: str, device: torch.device) -> Backend:
    """The named backend, ready for tensors on ``device`` (its compiled module loaded), as a
    registered op's body needs it; raises :class:`BackendUnavailable` like :func:`select`."""
    return select(device, backend)


def available(device: torch.device) -> list[str]:
    """Every backend that can serve tensors on ``device``."""
    return [b for b in BACKENDS if why_not(b, device) is None]
