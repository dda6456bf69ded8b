"""The EXIF manifest of a photo collection: one SQLite file with a row per image file.

``build_manifest`` scans a folder recursively, reads every new or changed image in worker
processes and commits the rows batch by batch, so an interrupted or crashed run keeps what it
indexed and a re-run reads only what changed (same size and mtime = unchanged: not read again).
Every file gets a row: with labels, or with the reason (:data:`FILE_REASONS`) it has none. A file
may take at most ``timeout_s`` seconds (the worker reading it is killed and replaced) and at most
``max_bytes`` bytes (larger files are not read), so a hostile file cannot hang or sink the run.

Table ``files`` (one row per file; ``<task>`` is each of the nine tasks):

* ``path`` (relative to the root, POSIX), ``size`` (bytes), ``mtime_ns``, ``sha256`` (of the content),
  ``backend``, ``parser`` (parser version), ``width``/``height`` (declared pixels, 0 unknown),
  ``reason`` (NULL when the file has at least one label), ``detail`` (the error message), ``raw`` (JSON
  of every raw tag string read);
* ``<task>_raw`` (the string the value came from), ``<task>_source`` (its EXIF tag; for ``iso``
  possibly a maker-note source of :data:`bfdkern.exif.parse.MAKER_ISO_SOURCES`),
  ``<task>_value`` (ordinal: float in its unit; make: cleaned text; enumerations: the code),
  ``<task>_label`` (ordinal: the value; categorical: the class name), ``<task>_reason`` (why the
  label is missing, one of :data:`bfdkern.exif.parse.REASONS`).

View ``labels``: ``path`` and one column per task holding the label. Table ``meta``: root, schema
version, creation time.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing import connection
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from bfdkern.data.decode import DEFAULT_LIMITS
from bfdkern.exif.labels import TASKS, Label, QuantileBins, label_of, labels_of
from bfdkern.exif.parse import (
    CATEGORICAL_SOURCES,
    ORDINAL_SOURCES,
    TagValue,
    parse_categorical,
    parse_ordinal,
    parse_tags,
)
from bfdkern.exif.reader import (
    READ_REASONS,
    ExifBackend,
    ExifReadError,
    NotARegularFileError,
    get_backend,
    open_regular,
)
from bfdkern.exif.tables import ROW_REASONS, detect_format, read_table

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

SCHEMA_VERSION = 2
"""2: table imports (``line``, ``disagree``, table ``rejects``) and face boxes (table ``faces``)."""
PARSER_VERSION = 2
"""Bump when parsing or labelling changes: rows made by another version are read again.
2: ISO falls back on the maker notes (Nikon, Canon, Casio; pyexiv2 backend)."""

# fmt: off
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".png", ".webp", ".heic", ".heif", ".avif", ".jxl",
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef",
    ".srw", ".x3f", ".mrw", ".iiq", ".raw", ".rwl", ".3fr", ".erf", ".kdc", ".dcr", ".mos", ".mef",
})
# fmt: on
"""File extensions (lower case) that the scan indexes; other files are counted, not read."""

FILE_REASONS: dict[str, str] = {
    **READ_REASONS,
    "too_large": "the file is larger than the size cap (max_bytes) and was not read",
    "timeout": "reading took longer than the time limit (timeout_s); its worker was killed",
    "crash": "the process reading the file died (a crash inside the backend)",
    "no_exif": "the file has none of the nine tasks' EXIF tags (or no EXIF at all)",
    "no_usable_tags": "the tags are present but none gives a usable label",
    "parser_error": "the tag parser raised on this file's values (a bfdkern bug: the detail names the error)",
    "unstorable": "a value could not be stored in SQLite (the detail names it); the file keeps no labels",
}
"""Why a file has no labels at all: the ``reason`` column of the ``files`` table."""

DEFAULT_MAX_BYTES = DEFAULT_LIMITS.max_bytes  # the cap policy of every image reader (data/decode.py)
DEFAULT_TIMEOUT_S = 30.0

_FILE_COLUMNS = (
    "path",
    "size",
    "mtime_ns",
    "sha256",
    "backend",
    "parser",
    "width",
    "height",
    "reason",
    "detail",
    "raw",
)
_TASK_FIELDS = ("raw", "source", "value", "label", "reason")
_V1_COLUMNS = _FILE_COLUMNS + tuple(f"{t}_{f}" for t in TASKS for f in _TASK_FIELDS)
COLUMNS: tuple[str, ...] = _V1_COLUMNS + ("line", "disagree")
"""Columns of the ``files`` table, in order (schema 2 added ``line`` and ``disagree`` at the end)."""

PART_COLUMNS: tuple[str, ...] = tuple(
    f"{part}_{c}" for part in ("face", "eyes", "mouth") for c in ("x0", "y0", "x1", "y1")
)
"""The face, eye-band and mouth boxes of the ``faces`` table, as fractions of the upright image's width
(x) and height (y)."""

FACE_COLUMNS: tuple[str, ...] = ("path", "source", "size", "mtime_ns", "reason", "detail", "faces", *PART_COLUMNS)
FACE_COLUMNS += ("keypoints", "line")
"""Columns of the ``faces`` table, in order."""

FACE_REASONS: dict[str, str] = {
    "no_face": "the detector found no face",
    "unreadable": "the image could not be decoded for face finding",
    "bad_box": "the table's box is not inside the image or has no area (x1 <= x0 or y1 <= y0)",
    "timeout": "face finding took longer than the time limit (timeout_s); its worker was killed",
    "crash": "the process finding the face died",
}
"""Why a file has no face box: the ``reason`` column of the ``faces`` table."""

_AT = {c: i for i, c in enumerate(COLUMNS)}
_TYPES = {"size": "INTEGER", "mtime_ns": "INTEGER", "parser": "INTEGER", "width": "INTEGER", "height": "INTEGER"}
_TYPES |= {"line": "INTEGER", "faces": "INTEGER"} | dict.fromkeys(PART_COLUMNS, "REAL")

Item = tuple[str, int, int]
"""(relative path, size in bytes, mtime in ns) of one file to index."""


@dataclass
class IndexReport:
    """What one ``build_manifest`` run did."""

    root: Path
    manifest: Path
    scanned: int = 0
    unchanged: int = 0
    indexed: int = 0
    removed: int = 0
    skipped_other: int = 0
    labelled: int = 0
    todo: int = 0
    reasons: Counter = field(default_factory=Counter)
    special: Counter = field(default_factory=Counter)
    table: str | None = None
    rejected: Counter = field(default_factory=Counter)
    disagreements: Counter = field(default_factory=Counter)
    not_indexed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.indexed / self.seconds if self.seconds > 0 else 0.0
        if self.table is not None:
            return self._table_text(rate)
        lines = [
            f"{self.manifest}: {self.scanned} image files under {self.root} "
            f"({self.indexed} read, {self.unchanged} unchanged, {self.removed} gone and removed, "
            f"{self.skipped_other} other files ignored) in {self.seconds:.1f} s ({rate:.0f} files/s)",
            f"  read now: {self.labelled} with labels, {self.indexed - self.labelled} without:",
        ]
        lines += [f"    {n:6d}  {r}: {FILE_REASONS.get(r, '')}" for r, n in self.reasons.most_common()]
        if self.special:
            kinds = ", ".join(f"{n} {_PLURALS[k] if n > 1 else k}" for k in SPECIAL_KINDS if (n := self.special[k]))
            lines.append(f"  not regular files, not read: {kinds}")
        lines += [f"  not indexed: {d}" for d in self.not_indexed]
        return "\n".join(lines)

    def _table_text(self, rate: float) -> str:
        if self.indexed == 0 and self.unchanged:
            head = f"{self.manifest}: {self.table} and {self.root} unchanged: {self.unchanged} files, nothing imported"
        else:
            head = (
                f"{self.manifest}: {self.indexed} files under {self.root} from {self.table} in {self.seconds:.1f} s "
                f"({rate:.0f} rows/s): {self.labelled} with labels, {self.indexed - self.labelled} without"
            )
        lines = [head]
        lines += [f"    {n:6d}  {r}: {FILE_REASONS.get(r, '')}" for r, n in self.reasons.most_common()]
        if self.disagreements:
            tasks = ", ".join(f"{t}: {n}" for t, n in self.disagreements.most_common())
            lines.append(
                f"  rows whose file's own EXIF says otherwise (the table's labels kept; column disagree): {tasks}"
            )
        if self.rejected:
            lines.append(
                f"  table rows not used: {sum(self.rejected.values())} (listed in the manifest's rejects table)"
            )
            lines += [f"    {n:6d}  {r}: {ROW_REASONS.get(r, '')}" for r, n in self.rejected.most_common()]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Reading one file
# --------------------------------------------------------------------------------------------
def index_file(root: str, item: Item, reader: ExifBackend, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple:
    """The manifest row (a tuple in :data:`COLUMNS` order) of one file. Never raises for a bad
    file: the row carries the reason."""
    rel, size, mtime_ns = item
    path = os.path.join(root, rel)
    row = dict.fromkeys(COLUMNS)
    row.update(path=rel, size=size, mtime_ns=mtime_ns, backend=reader.name, parser=PARSER_VERSION, width=0, height=0)
    try:
        if size > max_bytes:
            raise ExifReadError("too_large", f"{path}: {size:,} bytes, more than the {max_bytes:,} allowed")
        try:
            with open_regular(path) as fh:
                # Ask for the scanned size + 1 (not max_bytes: that would allocate it for every file);
                # a file that grew since the scan is read on, up to the cap.
                data = fh.read(size + 1)
                if len(data) > size:
                    data += fh.read(max_bytes + 1 - len(data))
        except NotARegularFileError as exc:
            raise ExifReadError("not_a_regular_file", str(exc)) from None
        except OSError as exc:
            raise ExifReadError("unreadable", f"{path}: cannot read the file: {exc.strerror or exc}") from None
        if len(data) > max_bytes:
            raise ExifReadError("too_large", f"{path}: grew past the {max_bytes:,} bytes allowed while indexing")
        row["sha256"] = hashlib.sha256(data).hexdigest()
        raw = reader.read(data, path)
    except ExifReadError as exc:
        row.update(reason=exc.reason, detail=str(exc))
        return tuple(row.values())
    except Exception as exc:  # a backend bug must not abort a collection-wide run
        row.update(reason="corrupt", detail=f"{path}: {type(exc).__name__}: {exc}")
        return tuple(row.values())
    row.update(width=raw.width, height=raw.height, raw=json.dumps(raw.tags, ensure_ascii=False))
    try:
        values = parse_tags(raw.tags)
        labels, reasons = labels_of(values)
    except Exception as exc:  # every parser path returns a value or a reason; this is the last guard
        row.update(reason="parser_error", detail=f"{path}: the EXIF parser failed: {type(exc).__name__}: {exc}")
        return tuple(row.values())
    for task, tag_value in values.items():
        value = tag_value.value
        if task in ORDINAL_SOURCES and value is not None:
            value = float(value)
        row.update(
            {
                f"{task}_raw": tag_value.raw,
                f"{task}_source": tag_value.source,
                f"{task}_value": value,
                f"{task}_label": labels[task],
                f"{task}_reason": reasons[task],
            }
        )
    if all(label is None for label in labels.values()):
        row["reason"] = "no_exif" if all(r == "absent" for r in reasons.values()) else "no_usable_tags"
    return tuple(row.values())


def _failed_row(item: Item, backend: str, reason: str, detail: str) -> tuple:
    row = dict.fromkeys(COLUMNS)
    row.update(
        path=item[0],
        size=item[1],
        mtime_ns=item[2],
        backend=backend,
        parser=PARSER_VERSION,
        width=0,
        height=0,
        reason=reason,
        detail=detail,
    )
    return tuple(row.values())


# --------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------
def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes in a file name (surrogate escapes)
        return False


class ScanResult(NamedTuple):
    """What :func:`scan` found under a root."""

    items: list[Item]  # image files, sorted by path
    others: int  # regular files without an image extension (counted, not read)
    problems: list[str]  # folders that cannot be listed, names that are not UTF-8
    special: Counter  # entries that are not regular files: kind -> count (see SPECIAL_KINDS)


SPECIAL_KINDS = ("FIFO", "socket", "device", "broken link", "link to a folder")
_PLURALS = dict(zip(SPECIAL_KINDS, ("FIFOs", "sockets", "devices", "broken links", "links to folders")))
"""What :func:`scan` counts instead of reading: FIFOs and devices would block or never end, links to
folders are not followed (no cycles), broken links lead nowhere."""


def _special_kind(entry: os.DirEntry) -> str | None:
    """None for a regular file (or a link to one); else its kind in :data:`SPECIAL_KINDS`."""
    try:
        mode = entry.stat().st_mode  # follows links
    except FileNotFoundError:
        return "broken link" if entry.is_symlink() else None  # None: vanished since the listing
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "link to a folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def scan(root: str | os.PathLike, stat_files: bool = True) -> ScanResult:
    """Everything under ``root``: image files (sorted by path), other files counted, problems, and the
    special entries counted by kind. Follows links to files, not links to folders (no cycles).
    ``stat_files=False``: sizes and mtimes are 0 (no call a file: for checking what exists)."""
    root = os.fspath(root)
    items, others, problems, special = [], 0, [], Counter()
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except OSError as exc:
            problems.append(f"{os.path.join(root, rel_dir)}: cannot list the folder: {exc.strerror or exc}")
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if not _utf8(rel):
                problems.append(f"{os.path.join(root, rel)!a}: the name is not UTF-8, so the manifest cannot hold it")
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    continue
                if not entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    kind = _special_kind(entry)
                    if kind is not None:
                        special[kind] += 1
                        continue
                if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                    others += 1
                    continue
                st = entry.stat() if stat_files else None
            except OSError:  # vanished since the listing: nothing to index
                continue
            items.append((rel, st.st_size, st.st_mtime_ns) if st is not None else (rel, 0, 0))
    items.sort()
    return ScanResult(items, others, problems, special)


# --------------------------------------------------------------------------------------------
# Worker processes with a time bound per file
# --------------------------------------------------------------------------------------------
def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process end when its parent ends, however the parent ends (kill -9 included):
    on Linux the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread also
    watches the parent's pid once a second. Ends at once when the parent is already gone."""
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


class ExifJob:
    """What an indexing worker does to one file for the ``files`` table: read its EXIF (:func:`index_file`).
    A job is a picklable object with ``__call__(item) -> row`` and ``failed(item, reason, detail) -> row``."""

    def __init__(self, root: str, backend, backend_name: str, max_bytes: int):
        self.root, self.backend, self.backend_name, self.max_bytes = root, backend, backend_name, max_bytes
        self._reader = None

    def __getstate__(self):  # spawned workers build their own reader (by name)
        backend = self.backend if isinstance(self.backend, str) else self.backend_name
        return {**self.__dict__, "backend": backend, "_reader": None}

    def __call__(self, item: Item) -> tuple:
        if self._reader is None:
            self._reader = get_backend(self.backend)
        return index_file(self.root, item, self._reader, self.max_bytes)

    def failed(self, item: Item, reason: str, detail: str) -> tuple:
        return _failed_row(item, self.backend_name, reason, detail)


SPAWN_START_S = 60.0
"""Seconds a spawned worker (a fresh interpreter, where fork is missing) may take to begin a batch."""


def _worker_main(conn, state, job, parent_pid: int, fresh_interpreter: bool = False) -> None:
    # The parent handles Ctrl-C and SIGTERM and ends the workers; they must not die half-way by themselves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for fd in list(_HELD_LOCKS):  # the parent's manifest lock is the parent's alone
        with suppress(OSError):
            os.close(fd)
    die_with_parent(parent_pid)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and fresh_interpreter:
        cv2.setNumThreads(1)  # one core's share (see run_workers); safe here, no pool was inherited
    while True:
        message = conn.recv()
        if message is None:
            return
        batch_id, items = message
        rows = []
        for i, item in enumerate(items):
            state[0], state[1], state[2] = batch_id, i, time.monotonic()
            rows.append(job(item))
        state[2] = 0.0
        conn.send((batch_id, rows))


class _Worker:
    """One worker process, its pipe and a shared (batch id, file index, start time) record that
    tells the parent which file it is reading and since when."""

    def __init__(self, ctx, job):
        self.conn, child = ctx.Pipe()
        self.state = ctx.Array("d", [-1.0, 0.0, 0.0], lock=False)
        fresh = ctx.get_start_method() != "fork"
        self.process = ctx.Process(target=_worker_main, args=(child, self.state, job, os.getpid(), fresh), daemon=True)
        self.process.start()
        child.close()
        self.batch: tuple[int, list[Item]] | None = None
        self.sent_at = 0.0  # when the batch was sent (monotonic seconds)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        with suppress(OSError):
            self.conn.send(None)
        self.process.join(1)
        self.kill()


def run_workers(root: str, batches: Sequence[list[Item]], workers: int, job, timeout_s: float) -> Iterator[list[tuple]]:
    """``job``'s rows for every item of ``batches``, a list per finished batch, computed by ``workers``
    processes. A worker that runs past ``timeout_s`` on one file is killed: that file gets
    ``job.failed(item, "timeout", ...)`` (``"crash"`` when the worker died on its own), the rest of its batch
    is done again by a fresh worker. ``workers`` = 0: in this process, without a time bound."""
    if workers == 0:
        for batch in batches:
            yield [job(item) for item in batch]
        return
    # fork: workers start in milliseconds and inherit the job as it is; spawn elsewhere (the job is pickled).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    pending = deque(enumerate(batches))
    attempts: Counter = Counter()
    # A worker is one core's share of the work: OpenCV's own thread pool (its Haar cascade runs on all
    # cores by default) would put several threads of every worker on each core. Set in this process,
    # which the workers inherit it from: OpenCV hangs when its thread count is changed after a fork.
    # A spawned worker starts a fresh interpreter: it sets the count itself (_worker_main), and its start-up
    # counts against the time a worker may take to begin a batch.
    cv2 = sys.modules.get("cv2")
    cv2_threads = cv2.getNumThreads() if cv2 is not None else None
    start_s = timeout_s if method == "fork" else max(timeout_s, SPAWN_START_S)
    pool: list[_Worker] = []
    try:
        if cv2 is not None:
            cv2.setNumThreads(1)
        pool.extend(_Worker(ctx, job) for _ in range(min(workers, len(batches))))
        while pending or any(w.batch for w in pool):
            for w in list(pool):
                if w.batch is None and pending:
                    w.batch, w.sent_at = pending.popleft(), time.monotonic()
                    try:
                        w.conn.send(w.batch)
                    except OSError:  # it died while idle: nothing of this batch was read
                        yield from _replace(pool, w, "crash", ctx, root, job, pending, attempts)
            busy = {w.conn: w for w in pool if w.batch is not None}
            for conn in connection.wait(list(busy), timeout=0.1):
                w = busy[conn]
                try:
                    _, rows = conn.recv()
                except (EOFError, OSError):
                    yield from _replace(pool, w, "crash", ctx, root, job, pending, attempts)
                    continue
                w.batch = None
                yield rows
            now = time.monotonic()
            for w in list(pool):
                # Since its current file, or since the batch was sent while it has not begun it: a worker
                # stuck before its first file (a library hanging in a forked child) is timed out too.
                begun = w.batch is not None and int(w.state[0]) == w.batch[0]
                started, limit = (w.state[2], timeout_s) if begun else (w.sent_at, start_s)
                if w.batch is not None and started > 0 and now - started > limit:
                    yield from _replace(pool, w, "timeout", ctx, root, job, pending, attempts, limit)
    finally:
        for w in pool:
            w.stop()
        if cv2 is not None:
            cv2.setNumThreads(cv2_threads)


def _replace(pool, w, reason, ctx, root, job, pending, attempts, timeout_s=0.0):
    """Kill worker ``w``, blame the file it was reading, requeue the rest of its batch, start a
    fresh worker in its place. Yields the blamed file's row."""
    w.kill()
    batch_id, items = w.batch
    pool[pool.index(w)] = _Worker(ctx, job)
    if int(w.state[0]) == batch_id:
        i = int(w.state[1])
        item = items[i]
        path = os.path.join(root, item[0])
        detail = (
            f"{path}: reading took more than {timeout_s:g} s"
            if reason == "timeout"
            else f"{path}: the reading process died (exit code {w.process.exitcode})"
        )
        rest = items[:i] + items[i + 1 :]
        if rest:
            pending.appendleft((batch_id, rest))
        yield [job.failed(item, reason, detail)]
        return
    # It died before starting this batch: retry once, then give up on the whole batch.
    attempts[batch_id] += 1
    if attempts[batch_id] < 2:
        pending.appendleft((batch_id, items))
        return
    why = f"was stuck for {timeout_s:g} s before reading it" if reason == "timeout" else "died before reading it"
    yield [job.failed(it, reason, f"{os.path.join(root, it[0])}: the worker {why}") for it in items]


# --------------------------------------------------------------------------------------------
# The manifest database
# --------------------------------------------------------------------------------------------
def _column_defs(columns: Sequence[str]) -> str:
    return ", ".join(f"{c} {_TYPES.get(c, '')}".strip() + (" PRIMARY KEY" if c == "path" else "") for c in columns)


def _connect(manifest: Path) -> sqlite3.Connection:
    """A connection that writes ``manifest``: created with the current schema, or a schema-1 manifest
    brought up to it in place (new columns and tables added; its rows are kept)."""
    try:
        db = sqlite3.connect(manifest)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"CREATE TABLE IF NOT EXISTS files ({_column_defs(COLUMNS)})")
        have = tuple(r[1] for r in db.execute("PRAGMA table_info(files)"))
        if have == _V1_COLUMNS:
            with db:
                for column in COLUMNS[len(_V1_COLUMNS) :]:
                    db.execute(f"ALTER TABLE files ADD COLUMN {_column_defs([column])}")
            have = COLUMNS
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute(f"CREATE TABLE IF NOT EXISTS faces ({_column_defs(FACE_COLUMNS)})")
        db.execute("CREATE TABLE IF NOT EXISTS rejects (source TEXT, line INTEGER, key TEXT, reason TEXT, detail TEXT)")
        label_cols = ", ".join(f"{t}_label AS {t}" for t in TASKS)
        db.execute(f"CREATE VIEW IF NOT EXISTS labels AS SELECT path, {label_cols} FROM files WHERE reason IS NULL")
    except sqlite3.DatabaseError as exc:
        if _is_full(exc):
            raise
        raise ValueError(f"{manifest}: not a usable SQLite manifest ({exc})") from None
    if have != COLUMNS:
        db.close()
        raise ValueError(f"{manifest}: a manifest of another schema version; index into a new file")
    return db


_HELD_LOCKS: set[int] = set()
"""File descriptors of the manifest locks this process holds: forked workers close their copies, so a
lock ends with the process that took it, not with the last of its workers."""


class ManifestBusyError(OSError):
    """Another process is updating the manifest."""


class DiskFullError(OSError):
    """The manifest's file system is full; the message names the path and the free space needed."""


@contextmanager
def lock_manifest(manifest: Path) -> Iterator[None]:
    """Hold ``MANIFEST.lock`` (an exclusive ``flock``) while a process writes the manifest, so that two
    writers never meet inside SQLite ("database is locked"): the second one is refused at once with the
    holder's pid. The lock file stays (removing it would race with the next writer); it holds the pid."""
    if fcntl is None:  # no flock (Windows): SQLite's own locking is all there is
        yield
        return
    lock_path = manifest.with_name(manifest.name + ".lock")
    try:
        fh = open(lock_path, "a+")  # noqa: SIM115 (held for the whole with block below)
    except OSError as exc:
        raise OSError(f"{lock_path}: cannot create the manifest's lock file: {exc.strerror or exc}") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise ManifestBusyError(
                f"{manifest}: another process (pid {holder}) is updating this manifest; run again when it has finished"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        _HELD_LOCKS.add(fh.fileno())
        try:
            yield
        finally:
            _HELD_LOCKS.discard(fh.fileno())


def _is_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc) or getattr(exc, "errno", None) == errno.ENOSPC


@contextmanager
def disk_full_reported(manifest: Path, report: IndexReport) -> Iterator[None]:
    """Turn "database or disk is full" into one :class:`DiskFullError` line naming the manifest, the free
    space and the space still needed (the files left times the bytes a row takes so far, twice for the
    write-ahead log, plus 1 MiB). The batches committed before are kept: SQLite rolls the failed one back."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as exc:
        if not _is_full(exc):
            raise
        folder = manifest.resolve().parent
        free = shutil.disk_usage(folder).free
        size = sum(p.stat().st_size for p in folder.glob(manifest.name + "*") if p.is_file())
        rows = report.indexed + report.unchanged
        per_row = max(1024, size // rows) if rows else 2048  # a row with its index and log pages: ~2 KiB
        need = 2 * per_row * max(report.todo - report.indexed, 1) + 2**20
        raise DiskFullError(
            f"{manifest}: the disk is full ({_mib(free)} free in {folder}); free at least {_mib(need)} more and "
            f"run again: the {report.indexed} files indexed in this run are kept"
        ) from None


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta"))


def open_manifest(manifest: str | os.PathLike) -> sqlite3.Connection:
    """A read-only connection to an existing manifest (rows as :class:`sqlite3.Row`); the caller closes it."""
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        db.execute("SELECT path FROM files LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path}: not a bfdkern manifest ({exc})") from None
    return db


def manifest_root(manifest: str | os.PathLike) -> Path:
    """The photo folder a manifest indexes."""
    with closing(open_manifest(manifest)) as db:
        return Path(_meta(db)["root"])


def build_manifest(
    root: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    workers: int = 2,
    backend: str | ExifBackend = "pyexiv2",
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> IndexReport:
    """Index the EXIF labels of every image under ``root`` into the SQLite file ``manifest``.

    Args:
        root: the photo folder (scanned recursively).
        manifest: the SQLite file (created, or updated in place: only new or changed files are read,
            rows of vanished files are removed).
        workers: worker processes; 0 reads in this process (no time bound: for debugging).
        backend: ``"pyexiv2"``, ``"pillow"`` or a backend object.
        max_bytes: files larger than this are not read (reason ``too_large``).
        timeout_s: seconds one file may take before its worker is killed (reason ``timeout``).
        progress: show a tqdm progress bar on stderr.
        batch_size: files a worker reads between two commits (default: adapts to the work).
        on_batch: called with the number of rows after each commit (tests use it to interrupt).
    """
    start = time.perf_counter()
    root_path, manifest_path = _checked_paths(root, manifest)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if timeout_s <= 0 or max_bytes <= 0:
        raise ValueError(f"timeout_s and max_bytes must be > 0, got {timeout_s} and {max_bytes}")
    reader_name = backend if isinstance(backend, str) else backend.name
    if isinstance(backend, str):
        get_backend(backend)  # fail here, not in every worker, when the backend cannot load
    report = IndexReport(root_path, manifest_path)
    with lock_manifest(manifest_path), disk_full_reported(manifest_path, report):
        db = _connect(manifest_path)
        try:
            _build(
                db,
                root_path,
                manifest_path,
                report,
                workers,
                backend,
                reader_name,
                max_bytes,
                timeout_s,
                progress,
                batch_size,
                on_batch,
            )
        finally:
            db.close()
            report.seconds = time.perf_counter() - start
    return report


def _build(
    db,
    root_path,
    manifest_path,
    report,
    workers,
    backend,
    reader_name,
    max_bytes,
    timeout_s,
    progress,
    batch_size,
    on_batch,
) -> None:
    meta = _meta(db)
    _check_root(meta, root_path, manifest_path)
    if meta.get("labels", "files") != "files":
        raise ValueError(
            f"{manifest_path}: holds labels imported from {meta.get('table', 'a table')}; index the files' EXIF "
            "into another manifest, or import the table again with --table"
        )
    if not meta:
        with db:
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("root", str(root_path)),
                    ("schema", str(SCHEMA_VERSION)),
                    ("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
                ],
            )
    items, report.skipped_other, report.not_indexed, report.special = scan(root_path)
    report.scanned = len(items)
    report.todo = len(items)
    known = {
        p: (s, m)
        for p, s, m in db.execute(
            "SELECT path, size, mtime_ns FROM files WHERE backend = ? AND parser = ?", (reader_name, PARSER_VERSION)
        )
    }
    todo = [it for it in items if known.get(it[0]) != (it[1], it[2])]
    report.unchanged = len(items) - len(todo)
    report.todo = len(todo)
    present = {it[0] for it in items}
    gone = [(p,) for (p,) in db.execute("SELECT path FROM files") if p not in present]
    if gone:
        with db:
            db.executemany("DELETE FROM files WHERE path = ?", gone)
    report.removed = len(gone)
    if todo:
        _index_into(
            db,
            str(root_path),
            todo,
            workers,
            backend,
            reader_name,
            max_bytes,
            timeout_s,
            progress,
            batch_size,
            on_batch,
            report,
        )


def _index_into(
    db, root, todo, workers, backend, reader_name, max_bytes, timeout_s, progress, batch_size, on_batch, report
) -> None:
    insert = f"INSERT OR REPLACE INTO files VALUES ({', '.join('?' * len(COLUMNS))})"
    reason_at = COLUMNS.index("reason")
    if batch_size is None:  # enough batches to balance the workers, few enough to keep IPC and commits cheap
        batch_size = max(1, min(64, len(todo) // (max(workers, 1) * 8)))
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    results = run_workers(root, batches, workers, ExifJob(root, backend, reader_name, max_bytes), timeout_s)
    with tqdm(total=len(todo), unit="file", desc="index", disable=not progress, file=sys.stderr) as bar:
        for rows in results:
            rows = write_rows(db, insert, rows, reader_name, root)
            for row in rows:
                reason = row[reason_at]
                if reason is None:
                    report.labelled += 1
                else:
                    report.reasons[reason] += 1
            report.indexed += len(rows)
            bar.update(len(rows))
            if on_batch is not None:
                on_batch(len(rows))


def _storable(row: tuple) -> tuple:
    """``row`` with text SQLite cannot take (lone surrogates from undecodable bytes) escaped."""
    return tuple(
        v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) and not _utf8(v) else v for v in row
    )


def write_rows(db: sqlite3.Connection, insert: str, rows: list[tuple], backend: str, root: str) -> list[tuple]:
    """Insert ``rows`` (one transaction; a crash loses at most this batch). A row SQLite cannot store
    (an integer beyond 64 bits, text that is not UTF-8) never sinks the batch: it is stored escaped,
    or replaced by a row with reason ``unstorable`` naming the file. Returns the rows as stored.
    ``sqlite3.OperationalError`` (disk full, locked) propagates: the batch is rolled back."""
    try:
        with db:
            db.executemany(insert, rows)
        return rows
    except sqlite3.OperationalError:
        raise
    except (sqlite3.Error, OverflowError, ValueError):  # ValueError covers UnicodeEncodeError
        pass  # find the row that cannot be stored, below
    stored = []
    with db:
        for row in rows:
            try:
                db.execute(insert, _storable(row))
                stored.append(row)
            except sqlite3.OperationalError:
                raise
            except (sqlite3.Error, OverflowError, ValueError) as exc:
                path = os.path.join(root, row[0])
                detail = f"{path}: a value cannot be stored in the manifest: {type(exc).__name__}: {exc}"
                failed = _failed_row((row[0], row[1], row[2]), backend, "unstorable", detail)
                db.execute(insert, _storable(failed))
                stored.append(failed)
    return stored


# --------------------------------------------------------------------------------------------
# Importing a metadata table
# --------------------------------------------------------------------------------------------
class FileIndex:
    """The scanned files of a root by relative path, file name and stem, to resolve the paths and ids that
    table rows name (another machine's absolute path, a path relative to the root or to where ExifTool ran,
    a file name, a bare id such as ``12345`` for ``12345.png``)."""

    def __init__(self, root: Path, items: Sequence[Item]):
        self.root = root
        self._prefix = root.as_posix().rstrip("/") + "/"
        self._cwd = os.getcwd()
        self._under_cwd = self._prefix.startswith(self._cwd.rstrip("/") + "/")
        self.by_rel = {it[0]: it for it in items}
        self._by_name: dict[str, list[str]] | None = None
        self._by_stem: dict[str, list[str]] = {}

    def full(self, rel: str) -> str:
        """The absolute path of a relative one."""
        return self._prefix + rel

    @property
    def by_name(self) -> dict[str, list[str]]:
        """File name -> relative paths (built on first use)."""
        if self._by_name is None:
            self._by_name = {}
            for rel in self.by_rel:
                name = rel.rsplit("/", 1)[-1]
                self._by_name.setdefault(name, []).append(rel)
                self._by_stem.setdefault(name.rsplit(".", 1)[0], []).append(rel)
        return self._by_name

    @property
    def by_stem(self) -> dict[str, list[str]]:
        """File name without its extension -> relative paths (built on first use)."""
        _ = self.by_name  # builds both
        return self._by_stem

    def resolve(self, key: str) -> tuple[str | None, str | None]:
        """(relative path, None) or (None, reason ``missing_file`` / ``ambiguous_path``). String work only
        (no file-system calls: 200,000 rows resolve in a fraction of a second)."""
        key = key.strip().replace("\\", "/")
        if key in self.by_rel:
            return key, None
        if os.path.isabs(key) or self._under_cwd:  # a path relative to where the table was made (ExifTool's cwd)
            full = os.path.normpath(os.path.join(self._cwd, key)).replace("\\", "/")
            if full.startswith(self._prefix) and full[len(self._prefix) :] in self.by_rel:
                return full[len(self._prefix) :], None
        name = key.rsplit("/", 1)[-1]
        found = self.by_name.get(name) or ([] if "." in name else self.by_stem.get(name, []))
        if len(found) == 1:
            return found[0], None
        return None, "ambiguous_path" if found else "missing_file"


def _table_fingerprint(table_path: Path, fmt: str, ordinal: str) -> str:
    paths = sorted(table_path.glob("*.json")) if table_path.is_dir() else [table_path]
    stats = [(p.name, st.st_size, st.st_mtime_ns) for p in paths for st in [p.stat()]]
    return json.dumps([str(table_path.resolve()), fmt, ordinal, PARSER_VERSION, stats])


class TableParser:
    """:func:`~bfdkern.exif.parse.parse_tags` (``text=True``) and :func:`~bfdkern.exif.labels.label_of` of
    table rows, remembered per task and source texts: a table repeats its values (makes, modes, common
    f-numbers) across hundreds of thousands of rows."""

    def __init__(self, apex_converted: bool):
        self._label_of, self._apex = label_of, apex_converted
        self._sources = {t: tuple(s) for t, s in ORDINAL_SOURCES.items()} | {
            t: (s,) for t, s in CATEGORICAL_SOURCES.items()
        }
        self._parse = {t: parse_ordinal for t in ORDINAL_SOURCES} | {t: parse_categorical for t in CATEGORICAL_SOURCES}
        self._cache: dict = {}

    def __call__(self, tags: dict[str, str]) -> dict[str, tuple]:
        """Task -> its five manifest columns (raw, source, value, label, reason) for one row's tags."""
        out = {}
        get = tags.get
        for task, sources in self._sources.items():
            key = (task, *map(get, sources))
            hit = self._cache.get(key)
            if hit is None:
                sub = {t: tags[t] for t in sources if t in tags}
                kwargs = {"apex_converted": self._apex} if task in ORDINAL_SOURCES else {}
                hit = _columns_of(task, self._parse[task](task, sub, text=True, **kwargs), self._label_of)
                if len(self._cache) < 1_000_000:
                    self._cache[key] = hit
            out[task] = hit
        return out


def _columns_of(task: str, tag_value: TagValue, label_of) -> tuple:
    """The five manifest columns of one task's value: raw, source, value (floats for ordinal tasks), label,
    reason."""
    value = tag_value.value
    if task in ORDINAL_SOURCES and value is not None:
        value = float(value)
    return (tag_value.raw, tag_value.source, value, *label_of(task, tag_value))


def table_row(item: Item, trow, table, parser: TableParser | None = None) -> tuple:
    """The manifest row (:data:`COLUMNS` order) of one table row for the file ``item``: the tags parsed as
    text by the file reader's parser, the official JSON's given labels kept as they are."""
    rel, size, mtime_ns = item
    row = [None] * len(COLUMNS)
    row[0], row[1], row[2], row[4], row[5], row[6], row[7] = (
        rel,
        size,
        mtime_ns,
        f"table:{table.format}",
        PARSER_VERSION,
        0,
        0,
    )
    row[_AT["line"]], row[_AT["raw"]] = trow.line, json.dumps(trow.tags, ensure_ascii=False)
    try:
        columns = (parser or TableParser(table.apex_converted))(trow.tags)
    except Exception as exc:  # the last guard, as for files
        row[_AT["reason"]] = "parser_error"
        row[_AT["detail"]] = f"{table.path} line {trow.line}: {type(exc).__name__}: {exc}"
        return tuple(row)
    for task, given in (trow.given or {}).items():
        if isinstance(given, str) and given.startswith("!"):  # a value the table gives but that cannot be used
            reason, _, detail = given[1:].partition(": ")
            columns[task] = (detail, "blades-json", None, None, reason)
        else:
            columns[task] = (str(given), "blades-json", given, given, None)
    for task, five in columns.items():
        at = _AT[f"{task}_raw"]  # raw, source, value, label, reason: consecutive columns
        row[at : at + 5] = five
    if all(five[3] is None for five in columns.values()):
        row[_AT["reason"]] = "no_exif" if all(five[4] == "absent" for five in columns.values()) else "no_usable_tags"
    return tuple(row)


def import_table(
    root: str | os.PathLike,
    manifest: str | os.PathLike,
    table: str | os.PathLike,
    *,
    format: str = "auto",
    ordinal: str = "levels",
    aliases: dict[str, str] | None = None,
    check_files: bool = False,
    workers: int = 2,
    backend: str = "pyexiv2",
    progress: bool = True,
) -> IndexReport:
    """Build the manifest of the photos under ``root`` from a metadata table instead of the files' bytes
    (see :mod:`bfdkern.exif.tables` for the formats). Each table row that names a file under ``root`` gives
    that file's row, its tags parsed exactly as the file reader's; a row that cannot be used is recorded in
    the ``rejects`` table with its line and reason (:data:`bfdkern.exif.tables.ROW_REASONS`). Files the table
    does not name get no row. Re-importing an unchanged table into an unchanged folder reads nothing again.
    A manifest holds the labels of one source: a manifest built from the files' EXIF is not mixed with a
    table's. Returns the report (``report.rejected``: reason -> rows).

    ``aliases``: row key -> file stem or name, for tables keyed by an id that is not the file's name (YFCC100M
    photo ids of FDF images, see :func:`bfdkern.data.face_index.fdf_photo_ids`). ``check_files``: also read each
    file's own EXIF (``workers`` processes, ``backend``) and record in the ``disagree`` column where it
    disagrees with the table (task -> [table label, file label]); the table's labels are kept."""
    start = time.perf_counter()
    root_path, manifest_path = _checked_paths(root, manifest)
    table_path = Path(table)
    if not table_path.exists():
        raise FileNotFoundError(f"{table_path}: no such table")
    report = IndexReport(root_path, manifest_path, table=str(table_path))
    with lock_manifest(manifest_path), disk_full_reported(manifest_path, report):
        db = _connect(manifest_path)
        try:
            meta = _meta(db)
            _check_root(meta, root_path, manifest_path)
            if meta.get("labels", "files") == "files" and db.execute("SELECT 1 FROM files LIMIT 1").fetchone():
                raise ValueError(
                    f"{manifest_path}: holds labels read from the files; import the table into a new manifest"
                )
            scanned = scan(root_path, stat_files=False)
            report.skipped_other, report.not_indexed, report.special = scanned.others, scanned.problems, scanned.special
            files = FileIndex(root_path, scanned.items)
            fmt = format
            if fmt == "auto":
                fmt = detect_format(table_path)
            fingerprint = _table_fingerprint(table_path, fmt, ordinal)
            if meta.get("table_fingerprint") == fingerprint and _unchanged(db, files, str(table_path)):
                report.unchanged = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
                report.scanned = report.unchanged
                report.rejected = Counter(
                    dict(
                        db.execute(
                            "SELECT reason, COUNT(*) FROM rejects WHERE source = ? GROUP BY reason", (str(table_path),)
                        )
                    )
                )
                return report
            parsed = read_table(table_path, fmt, ordinal)
            rows, rejects, seen = [], [], {}
            parser = TableParser(parsed.apex_converted)
            for trow in tqdm(parsed.rows, desc="import", unit="row", disable=not progress, file=sys.stderr):
                if trow.error is not None:
                    reason, _, detail = trow.error.partition(": ")
                    rejects.append((str(table_path), trow.line, trow.key, reason, detail))
                    continue
                rel, problem = files.resolve(trow.key)
                if rel is None and aliases and trow.key in aliases:  # a photo id -> its image's name
                    rel, problem = files.resolve(aliases[trow.key])
                if rel is None:
                    detail = (
                        f"{trow.key!r} names no file under {root_path}"
                        if problem == "missing_file"
                        else (f"{trow.key!r} matches several files under {root_path}: give its path")
                    )
                    rejects.append((str(table_path), trow.line, trow.key, problem, detail))
                    continue
                if rel in seen:
                    detail = f"{rel}: line {seen[rel]} already names this file; this row is not used"
                    rejects.append((str(table_path), trow.line, trow.key, "duplicate", detail))
                    continue
                try:
                    st = os.stat(files.full(rel))  # the row keeps the file's size and mtime
                except OSError:
                    rejects.append((str(table_path), trow.line, trow.key, "missing_file", f"{rel}: vanished"))
                    continue
                seen[rel] = trow.line
                rows.append(table_row((rel, st.st_size, st.st_mtime_ns), trow, parsed, parser))
            report.todo = len(rows)
            if check_files and rows:
                rows = _with_disagreements(rows, str(root_path), workers, backend, parsed, report, progress)
            insert = f"INSERT OR REPLACE INTO files VALUES ({', '.join('?' * len(COLUMNS))})"
            with db:
                db.execute("DELETE FROM files")
                db.execute("DELETE FROM rejects")
            for i in range(0, len(rows), 20000):
                stored = write_rows(db, insert, rows[i : i + 20000], f"table:{parsed.format}", str(root_path))
                report.indexed += len(stored)
                for row in stored:
                    reason = row[COLUMNS.index("reason")]
                    if reason is None:
                        report.labelled += 1
                    else:
                        report.reasons[reason] += 1
            with db:
                db.executemany("INSERT INTO rejects VALUES (?, ?, ?, ?, ?)", rejects)
                entries = {
                    "root": str(root_path),
                    "schema": str(SCHEMA_VERSION),
                    "labels": f"table:{parsed.format}",
                    "table": str(table_path),
                    "table_fingerprint": fingerprint,
                    "ordinal": parsed.ordinal,
                }
                if parsed.vocabulary is not None:
                    entries["vocabulary"] = json.dumps({t: list(c) for t, c in parsed.vocabulary.items()})
                entries.setdefault("created", meta.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(entries.items()))
            report.scanned = report.indexed
            report.rejected = Counter(r[3] for r in rejects)
        finally:
            db.close()
            report.seconds = time.perf_counter() - start
    return report


def _with_disagreements(rows, root, workers, backend, table, report, progress) -> list[tuple]:
    """``rows`` with their ``disagree`` column: where the file's own EXIF gives another label than the table
    (tasks whose labels the table gave as classes of another vocabulary, or as levels, are not compared)."""
    items = [(r[0], r[1], r[2]) for r in rows]
    batch = max(1, min(64, len(items) // (max(workers, 1) * 8)))
    job = ExifJob(root, backend, backend, DEFAULT_MAX_BYTES)
    own = {}
    with tqdm(total=len(items), desc="check files", unit="file", disable=not progress, file=sys.stderr) as bar:
        for done in run_workers(root, [items[i : i + batch] for i in range(0, len(items), batch)], workers, job, 30.0):
            own.update((r[0], r) for r in done)
            bar.update(len(done))
    levels = set(ORDINAL_SOURCES) if table.vocabulary is not None and table.ordinal == "levels" else set()
    skip = set(table.vocabulary or {}) | levels
    out = []
    for row in rows:
        mine, disagree = own.get(row[0]), {}
        for task in TASKS:
            at = _AT[f"{task}_label"]
            a, b = row[at], None if mine is None else mine[at]
            if task in skip or a is None or b is None:
                continue
            same = math.isclose(a, b, rel_tol=1e-6) if isinstance(a, float) and isinstance(b, float) else a == b
            if not same:
                disagree[task] = [a, b]
                report.disagreements[task] += 1
        at = _AT["disagree"]
        out.append(row[:at] + (json.dumps(disagree) if disagree else None,) + row[at + 1 :])
    return out


def _unchanged(db: sqlite3.Connection, files: FileIndex, source: str) -> bool:
    """Whether every file the manifest names still exists and no rejected row would now find its file."""
    if any(p not in files.by_rel for (p,) in db.execute("SELECT path FROM files")):
        return False
    keys = db.execute("SELECT key FROM rejects WHERE source = ? AND reason = 'missing_file'", (source,))
    return all(files.resolve(k)[0] is None for (k,) in keys if k is not None)


def _checked_paths(root, manifest) -> tuple[Path, Path]:
    """(the resolved photo folder, the manifest path), or the error naming the one that cannot serve."""
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise NotADirectoryError(f"{root}: not a folder of photos")
    manifest_path = Path(manifest)
    if not manifest_path.parent.is_dir():
        raise FileNotFoundError(f"{manifest_path}: the folder {manifest_path.parent} does not exist")
    return root_path, manifest_path


def _check_root(meta: dict[str, str], root_path: Path, manifest_path: Path) -> None:
    if "root" in meta and meta["root"] != str(root_path):
        raise ValueError(f"{manifest_path}: indexes {meta['root']}, not {root_path}; use another manifest file")


# --------------------------------------------------------------------------------------------
# Reading labels back
# --------------------------------------------------------------------------------------------
def read_labels(manifest: str | os.PathLike) -> tuple[list[Path], list[dict[str, Label]]]:
    """(absolute paths, label dicts task -> label) of every file in the manifest that has labels."""
    with closing(open_manifest(manifest)) as db:
        root = Path(_meta(db)["root"])
        rows = db.execute("SELECT * FROM labels ORDER BY path").fetchall()
    return [root / r["path"] for r in rows], [{t: r[t] for t in TASKS} for r in rows]


def fit_bins(manifest: str | os.PathLike, levels: int) -> QuantileBins:
    """Quantile bins (L = ``levels``) of the ordinal tasks, fitted on a (training) manifest."""
    _, labels = read_labels(manifest)
    return QuantileBins.fit({t: [lab[t] for lab in labels] for t in ORDINAL_SOURCES}, levels)
