"""bfdkern's files on disk. Writes are atomic: a crash, a kill or a full disk mid-write never leaves a
half-written file in place of the previous one, and a full disk is one clear error naming the file and the
space it needs. A torch file that cannot be read is described in one line (torch's own errors run to six)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""A write failed because the file system (or the user's quota) is full."""
SLACK = 1 << 16
"""Bytes a torch file needs beyond its tensors' payload (the zip container and the pickled structure)."""


class DiskFull(OSError):
    """A file could not be written for lack of space; the message names the file, the space needed and the
    space free. The previous version of the file, if any, is untouched."""

    def __init__(self, path: str | os.PathLike, needed: int | None = None, free: int | None = None, note: str = ""):
        path = Path(path)
        if free is None:
            free = free_bytes(path.parent)
        need = f"it needs about {_size(needed)} free, " if needed is not None else ""
        message = f"{path}: the file system is full: {need}{_size(free)} are free"
        super().__init__(errno.ENOSPC, message + (f"; {note}" if note else ""))
        self.path, self.needed, self.free = path, needed, free

    def __str__(self) -> str:
        return self.strerror


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes this process may still write on the file system of ``folder`` (root may use the blocks reserved
    for it); None when unknown."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows)
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            return None
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError for a full file system or quota."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


@contextlib.contextmanager
def disk_full_named(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Re-raise a full-disk OSError raised in the block as :class:`DiskFull` naming ``path``."""
    try:
        yield
    except DiskFull:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path, needed) from None
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], needed: int | None = None) -> Path:
    """Write through ``write(file)`` into a temporary file beside ``path`` (fsync'd), then rename it into place
    (os.replace is atomic on POSIX and Windows); on any failure the temporary file is removed and ``path``
    keeps its previous content. Space is checked first when ``needed`` (bytes) is known; a write that fails
    while the file system is full raises :class:`DiskFull`, whatever the writer's own error. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = free_bytes(path.parent)
    if needed is not None and free is not None and free < needed:
        raise DiskFull(path, needed, free)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # torch's zip writer reports a failed write as "RuntimeError: [enforce fail at inline_container.cc]
        # ... unexpected pos"; the full file system is the cause to report (judged before the temporary file
        # gives its space back).
        full = is_disk_full(exc) or (isinstance(exc, RuntimeError) and _looks_full(path.parent, needed))
        written = Path(tmp).stat().st_size if full and Path(tmp).exists() else 0
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise DiskFull(path, max(needed or 0, written + SLACK)) from None
        raise
    return path


def _looks_full(folder: Path, needed: int | None) -> bool:
    free = free_bytes(folder)
    return free is not None and free < max(needed or 0, SLACK)


def payload_bytes(payload) -> int:
    """Bytes of the tensor storages in a (nested dict / list / tuple) payload, each storage counted once."""
    import torch  # lazy: CLI start-up (pretrain --help, via training.config)

    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def atomic_torch_save(payload, path: str | os.PathLike) -> Path:
    """torch.save ``payload`` to ``path`` atomically; :class:`DiskFull` (before writing when the free space is
    clearly short) names the file and the space it needs, and the previous file stays intact."""
    import torch  # lazy: CLI start-up (pretrain --help, via training.config)

    return atomic_write(Path(path), lambda f: torch.save(payload, f), payload_bytes(payload) + SLACK)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, with :class:`DiskFull` for a full file system."""
    data = text.encode("utf-8")
    return atomic_write(Path(path), lambda f: f.write(data), len(data) + 4096)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def describe_load_error(exc: BaseException) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` failed: a pickled object (a whole model
    saved with ``torch.save(model)``) is named with what to save instead; otherwise the informative line of
    torch's message (its opening lines are the same advice for every file)."""
    text = _ANSI.sub("", str(exc))
    found = _GLOBAL.search(text)
    if found:
        return (
            f"it holds a pickled {found.group(1)} object (a whole model?), which weights-only loading does not "
            "run; save its state_dict() instead"
        )
    if "WeightsUnpickler error:" in text:  # the reason follows the marker, on its line or the next ones
        after = text.split("WeightsUnpickler error:", 1)[1]
        reason = next((line.strip() for line in after.splitlines() if line.strip()), "")
        reason = reason.split(". Please use")[0].split(" Check the documentation")[0].rstrip(".")
        if reason:
            return f"{reason} (a damaged file, or one holding more than tensors and plain values: never unpickled)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0].split(". ")[0].rstrip(".")  # torch's zip errors go on with advice
