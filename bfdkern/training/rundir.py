"""The run directory as a resource: one session at a time (an fcntl lock the OS releases when its process
dies, however it dies), what the directory holds, and what a start clears.

A run directory holds a run once a checkpoint is in it. A directory without one (a first start that failed,
was interrupted, or was killed before or while writing its first checkpoint) can simply be started again:
the next start clears that attempt's files and the temporary files any killed write left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

LOCK_NAME = "run.lock"
"""The lock file; it holds the pid of the session that last held the lock."""

try:
    import fcntl
except ImportError:  # Windows: no fcntl; runs are not locked there
    fcntl = None


class RunDirInUse(OSError):
    """Another live session holds the run directory's lock."""

    def __str__(self) -> str:
        return self.strerror


class RunLock:
    """An exclusive lock on ``RUN_DIR/run.lock`` for one session.

    :meth:`acquire` creates the folder when needed and raises :class:`RunDirInUse`, naming the holder's pid,
    while another process holds it. The lock is an ``fcntl.flock`` on the open file, so the OS releases it
    when the holder exits or is killed (SIGKILL, OOM): a stale lock never blocks a folder.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.created_dir = False
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        """Take the lock (non-blocking); RunDirInUse when another process has it."""
        if self._file is not None:
            return self
        if not self.run_dir.is_dir():
            if self.run_dir.exists():
                raise NotADirectoryError(f"{self.run_dir}: exists and is not a folder")
            self.run_dir.mkdir(parents=True)
            self.created_dir = True
        while True:
            f = open(self.path, "a+")  # noqa: SIM115 - held open for the whole session
            if fcntl is None:
                break
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                f.close()
                raise RunDirInUse(
                    errno.EBUSY,
                    f"{self.run_dir}: in use by another bfdkern session (pid {holder}); wait for it to end, or "
                    "choose another --out",
                ) from None
            try:  # the file we locked may have been removed (a failed start cleaning up) before we locked it
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return self

    def release(self, failed: bool = False) -> None:
        """Give the lock up and delete the lock file; after a ``failed`` start, also the folder when this lock
        created it and it is empty again (a start that could not begin leaves nothing behind)."""
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)  # a process that opened it meanwhile sees the inode change and retries
        self._file.close()  # closing the descriptor releases the flock
        self._file = None
        if failed and self.created_dir:
            with contextlib.suppress(OSError):  # not empty: something else is in it now
                self.run_dir.rmdir()


def remove_leftovers(run_dir: str | os.PathLike, names) -> list[Path]:
    """Delete the temporary files that killed writes of the files ``names`` left (``checkpoint.pt.<random>.tmp``,
    ``log.csv.tmp``: never usable). Call it holding the lock, so that no live write is touched. Returns what
    was removed."""
    removed = []
    for pattern in [p for name in names for p in (f"{name}.*.tmp", f"{name}.tmp")]:
        for path in Path(run_dir).glob(pattern):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def remove_files(run_dir: str | os.PathLike, names) -> list[Path]:
    """Delete the named files (and folders) of an earlier attempt that saved no checkpoint."""
    removed = []
    for name in names:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed
