"""Face boxes in the manifest: found once by the indexing workers, or imported from a table (FDF's
``fdf_metainfo.json``, a CSV or JSON of boxes or landmarks), stored in the manifest's ``faces`` table and read
back by every start, resume, rank and ablation preset without detecting again.

A ``faces`` row holds the face, eye-band and mouth boxes as fractions of the upright image (x of its width,
y of its height), the keypoints where the source has them, the detector (name and version) or table that
gave them, and the reason when there is no face (:data:`bfdkern.exif.manifest.FACE_REASONS`). A detected
row is valid while its file keeps its size and mtime; a row from a table is keyed by the file's name.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bfdkern.data.decode import UnreadableImage, decode_image, image_size
from bfdkern.data.faces import (
    FaceLocator,
    FaceParts,
    LandmarkLocator,
    detector_id,
    normalized_parts,
    parts_from_face_box,
    parts_from_fdf,
)
from bfdkern.exif.labels import TASKS, targets_from_columns
from bfdkern.exif.manifest import (
    FACE_COLUMNS,
    PART_COLUMNS,
    FileIndex,
    Item,
    _connect,
    _meta,
    disk_full_reported,
    lock_manifest,
    manifest_root,
    open_manifest,
    run_workers,
)

DETECT_SIDE = 640
"""Images are decoded at (at least) this side for face detection (JPEG draft mode)."""

BOX_FORMATS = {
    "fdf": "FDF's fdf_metainfo.json: image id -> {bounding_box (fractions), landmark [7, 2] (fractions)}",
    "json": "a JSON object: file name -> a box [x0, y0, x1, y1] or landmarks [[x, y], ...] (68 or 5 points), pixels",
    "csv": "a CSV with a path column and x0, y0, x1, y1 in pixels (optional eyes_* and mouth_* boxes)",
}
"""Face-box table formats :func:`import_boxes` reads."""


@dataclass
class FaceReport:
    """What one face pass did: files looked at, faces found, detections run (0 when everything was known)."""

    source: str
    looked_at: int = 0
    found: int = 0
    detections: int = 0
    known: int = 0
    reasons: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def __str__(self) -> str:
        text = (
            f"faces ({self.source}): {self.looked_at} files looked at, {self.found} with a face, "
            f"{self.known} already known; {self.detections} detections run in {self.seconds:.1f} s"
        )
        if self.reasons:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common()) + ")"
        if self.rejected:
            text += "; table rows not used: " + ", ".join(f"{r}: {n}" for r, n in self.rejected.most_common())
        return text


def _face_row(rel, source, size, mtime_ns, reason=None, detail=None, faces=0, parts=None, keypoints=None, line=None):
    row = dict.fromkeys(FACE_COLUMNS)
    row.update(path=rel, source=source, size=size, mtime_ns=mtime_ns, reason=reason, detail=detail, faces=faces)
    row.update(keypoints=None if keypoints is None else json.dumps(keypoints), line=line)
    if parts is not None:
        row.update(zip(PART_COLUMNS, (float(v) for v in parts)))
    return tuple(row.values())


class FaceJob:
    """What an indexing worker does to one file for the ``faces`` table: decode it (at about
    :data:`DETECT_SIDE`), find its faces, store the largest as fractions of the image."""

    def __init__(self, root: str, locator: FaceLocator, source: str):
        self.root, self.locator, self.source = root, locator, source

    def __call__(self, item: Item) -> tuple:
        rel, size, mtime_ns = item
        path = os.path.join(self.root, rel)
        try:
            image = decode_image(path, draft=(DETECT_SIDE, DETECT_SIDE))
        except UnreadableImage as exc:
            return _face_row(rel, self.source, size, mtime_ns, "unreadable", str(exc))
        faces = self.locator.locate(np.asarray(image), source=path)
        if not faces:
            return _face_row(rel, self.source, size, mtime_ns, "no_face", f"{path}: no face found")
        parts = normalized_parts(faces[0], image.width, image.height)
        return _face_row(rel, self.source, size, mtime_ns, faces=len(faces), parts=parts)

    def failed(self, item: Item, reason: str, detail: str) -> tuple:
        return _face_row(item[0], self.source, item[1], item[2], reason, detail)


def _insert_faces(db: sqlite3.Connection, rows: list[tuple]) -> None:
    with db:
        db.executemany(f"INSERT OR REPLACE INTO faces VALUES ({', '.join('?' * len(FACE_COLUMNS))})", rows)


def find_faces(
    manifest: str | os.PathLike,
    locator: FaceLocator,
    *,
    workers: int = 2,
    timeout_s: float = 30.0,
    progress: bool = True,
    redo: bool = False,
) -> FaceReport:
    """Find the face of every file of ``manifest`` that has no valid face row from this detector yet (none,
    another detector's, or its file changed since), in ``workers`` processes, and store them. A file whose
    face came from a table keeps it. Returns what it did (``detections``: files detected now)."""
    start = time.perf_counter()
    manifest = Path(manifest)
    source = detector_id(locator)
    report = FaceReport(source)
    with lock_manifest(manifest), closing(_connect(manifest)) as db:
        root = _meta(db).get("root")
        if root is None:
            raise ValueError(f"{manifest}: an empty manifest; index the photos first")
        rows = db.execute(
            "SELECT f.path, f.size, f.mtime_ns, g.source, g.size, g.mtime_ns FROM files f "
            "LEFT JOIN faces g ON g.path = f.path ORDER BY f.path"
        ).fetchall()
        todo = []
        for path, size, mtime_ns, g_source, g_size, g_mtime in rows:
            from_table = g_source is not None and g_source.startswith("table:")
            valid = g_source == source and (g_size, g_mtime) == (size, mtime_ns)
            if (from_table or valid) and not redo:
                report.known += 1
            else:
                todo.append((path, size, mtime_ns))
        report.looked_at = len(rows)
        with disk_full_reported(manifest, _Todo(len(todo))):
            batch = max(1, min(16, len(todo) // (max(workers, 1) * 4) or 1))
            batches = [todo[i : i + batch] for i in range(0, len(todo), batch)]
            bar = tqdm(total=len(todo), desc="faces", unit="img", disable=not progress, file=sys.stderr)
            with bar:
                for done in run_workers(root, batches, workers, FaceJob(root, locator, source), timeout_s):
                    _insert_faces(db, done)
                    report.detections += len(done)
                    report.reasons.update(r[FACE_COLUMNS.index("reason")] for r in done if r[4] is not None)
                    bar.update(len(done))
        report.found = db.execute("SELECT COUNT(*) FROM faces WHERE reason IS NULL").fetchone()[0]
    report.seconds = time.perf_counter() - start
    return report


class _Todo:
    """The counters :func:`bfdkern.exif.manifest.disk_full_reported` reads, for a face pass."""

    def __init__(self, todo: int):
        self.todo, self.indexed, self.unchanged = todo, 0, 0


# --------------------------------------------------------------------------------------------
# Boxes from tables
# --------------------------------------------------------------------------------------------
def _box_format(path: Path) -> str:
    if path.suffix.lower() == ".csv":
        return "csv"
    with open(path, "rb") as fh:
        head = fh.read(65536).decode("utf-8", "replace")
    return "fdf" if "bounding_box" in head else "json"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}, column {exc.colno}: malformed JSON ({exc.msg})") from None


def _fdf_rows(path: Path):
    """(line, key, parts fractions | None, keypoints | None, error | None) per FDF image."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: fdf_metainfo.json is an object keyed by image id, got a {type(data).__name__}")
    for line, (key, entry) in enumerate(data.items(), start=1):
        if not isinstance(entry, dict) or "bounding_box" not in entry:
            yield line, str(key), None, None, "bad_row: no bounding_box"
            continue
        keypoints = entry.get("landmark")
        try:
            parts = parts_from_fdf(entry["bounding_box"], keypoints)
            points = None if keypoints is None else np.asarray(keypoints, dtype=np.float64).reshape(-1, 2).tolist()
        except (ValueError, TypeError) as exc:
            yield line, str(key), None, None, f"bad_box: {exc}"
            continue
        yield line, str(key), parts, points, None


def _pixel_rows(path: Path, fmt: str):
    """(line, key, FaceParts in pixels | None, keypoints (pixels) | None, error | None) for pixel tables."""
    if fmt == "json":
        data = _read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object mapping file names to boxes or landmarks")
        for line, (key, value) in enumerate(data.items(), start=1):
            try:
                faces = LandmarkLocator._faces(value, str(key))
            except ValueError as exc:
                yield line, str(key), None, None, f"bad_box: {exc}"
                continue
            points = value if np.asarray(value).ndim >= 2 and np.asarray(value).shape[-1] == 2 else None
            yield line, str(key), faces[0], points, None
        return
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        names = reader.fieldnames or []
        path_col = next((c for c in ("path", "file", "filename", "image") if c in names), None)
        if path_col is None or not {"x0", "y0", "x1", "y1"} <= set(names):
            raise ValueError(f"{path}: line 1: a boxes CSV needs a path column and x0, y0, x1, y1 (got {names})")
        for row in reader:
            line = reader.line_num
            try:
                face = tuple(int(round(float(row[c]))) for c in ("x0", "y0", "x1", "y1"))
                if face[2] <= face[0] or face[3] <= face[1]:
                    raise ValueError(f"box {face} has no area")
                parts = parts_from_face_box(face)
                if {"eyes_x0", "mouth_y1"} <= set(names) and row.get("eyes_x0"):
                    vals = [
                        int(round(float(row[f"{p}_{c}"]))) for p in ("eyes", "mouth") for c in ("x0", "y0", "x1", "y1")
                    ]
                    parts = FaceParts(face, tuple(vals[:4]), tuple(vals[4:]))
            except (ValueError, TypeError, KeyError) as exc:
                yield line, row.get(path_col), None, None, f"bad_box: {exc}"
                continue
            yield line, row[path_col], parts, None, None


def import_boxes(
    manifest: str | os.PathLike,
    table: str | os.PathLike,
    *,
    format: str = "auto",
    aliases: dict[str, str] | None = None,
) -> FaceReport:
    """Store the face boxes of a table (:data:`BOX_FORMATS`) in ``manifest``'s ``faces`` table, for the files
    the manifest holds (rows are matched by path, file name or id as table rows are). Pixel boxes are turned
    into fractions with the image's size (read from its header). A row that cannot be used is recorded in the
    ``rejects`` table with its line and reason. ``aliases``: row key -> file stem, for keys that are not file
    names."""
    start = time.perf_counter()
    manifest, table = Path(manifest), Path(table)
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no such boxes table")
    fmt = _box_format(table) if format == "auto" else format
    if fmt not in BOX_FORMATS:
        raise ValueError(f"unknown boxes format {format!r}; expected one of {', '.join(BOX_FORMATS)} or auto")
    source = f"table:{fmt}:{table.name}"
    report = FaceReport(source)
    with lock_manifest(manifest), closing(_connect(manifest)) as db:
        root = _meta(db).get("root")
        if root is None:
            raise ValueError(f"{manifest}: an empty manifest; index the photos (or import the labels) first")
        items = db.execute("SELECT path, size, mtime_ns FROM files").fetchall()
        files = FileIndex(Path(root), [tuple(r) for r in items])
        rows, rejects, seen = [], [], {}
        reader = _fdf_rows(table) if fmt == "fdf" else _pixel_rows(table, fmt)
        for line, key, parts, points, error in reader:
            if error is None and key is not None:
                rel, problem = files.resolve(str(key))
                if rel is None and aliases and str(key) in aliases:
                    rel, problem = files.resolve(aliases[str(key)])
                if rel is None:
                    continue  # boxes of files outside the manifest (FDF lists 1.5M faces): not an error
                if rel in seen:
                    error = f"duplicate: line {seen[rel]} already gives this file's box"
            elif key is None and error is None:
                error = "bad_row: no path"
            if error is not None:
                reason, _, detail = error.partition(": ")
                rejects.append((str(table), line, None if key is None else str(key), reason, detail))
                continue
            seen[rel] = line
            rel_item = files.by_rel[rel]
            if fmt != "fdf":
                try:
                    width, height = image_size(Path(root) / rel)
                except UnreadableImage as exc:
                    rejects.append((str(table), line, str(key), "bad_box", str(exc)))
                    continue
                parts = normalized_parts(parts, width, height)
                if points is not None:
                    points = (np.asarray(points, dtype=np.float64).reshape(-1, 2) / [width, height]).tolist()
            if not all(-0.5 <= v <= 1.5 for v in parts[:4]):
                rejects.append((str(table), line, str(key), "bad_box", f"face box {parts[:4]} lies outside the image"))
                continue
            rows.append(
                _face_row(rel, source, rel_item[1], rel_item[2], faces=1, parts=parts, keypoints=points, line=line)
            )
        with disk_full_reported(manifest, _Todo(len(rows))):
            with db:
                db.execute("DELETE FROM faces WHERE source LIKE 'table:%'")  # a new table replaces the last one
                db.execute("DELETE FROM rejects WHERE source = ?", (str(table),))
                db.executemany("INSERT INTO rejects VALUES (?, ?, ?, ?, ?)", rejects)
            _insert_faces(db, rows)
        report.looked_at, report.found = len(items), len(rows)
        report.known = len(rows)
        report.rejected = Counter(r[3] for r in rejects)
    report.seconds = time.perf_counter() - start
    return report


def fdf_photo_ids(metainfo: str | os.PathLike) -> dict[str, str]:
    """Flickr photo id -> FDF image id, from the ``photo_url`` of ``fdf_metainfo.json``
    (``http://www.flickr.com/photos/<user>/<photo id>/``): links tables keyed by photo id (YFCC100M, per-photo
    EXIF JSON) to FDF's images."""
    data = _read_json(Path(metainfo))
    out = {}
    for key, entry in data.items():
        url = entry.get("photo_url", "") if isinstance(entry, dict) else ""
        parts = [p for p in str(url).split("/") if p]
        if parts and parts[-1].isdigit():
            out[parts[-1]] = str(key)
    return out


# --------------------------------------------------------------------------------------------
# Reading a manifest for training, and preparing it once under torch.distributed
# --------------------------------------------------------------------------------------------
MANIFEST_USABLE_REASONS = ("no_exif", "no_usable_tags")
"""Manifest rows without labels that are still real photos (they serve the manipulation tasks)."""

_NO_NUMBER = -1e300  # stands for NULL in numeric columns read in bulk


@dataclass
class ManifestItems:
    """Everything the dataset needs from a manifest, column by column (a few hundred bytes a photo).

    Attributes:
        paths: absolute paths, in the manifest's path order.
        parts: [N, 12] float64 face/eyes/mouth boxes as fractions of the upright image (NaN: none known).
        sizes: [N, 2] declared (width, height), 0 where unknown.
        targets: [N, J] float32 EXIF targets of the spec.
        skip: row index -> why the row is not a usable photo (``"manifest: <reason>"``).
        face_reasons: row index -> why it has no face (the ``faces`` table's reason).
        vocabulary: task -> class names the manifest's class labels name (None: bfdkern's).
    """

    paths: list[str]
    parts: np.ndarray
    sizes: np.ndarray
    targets: object
    skip: dict[int, str]
    face_reasons: dict[int, str]
    vocabulary: dict[str, list[str]] | None


def read_manifest_items(manifest: str | os.PathLike, spec, bins=None) -> ManifestItems:
    """Read ``manifest`` for ``spec`` in bulk (200,000 rows in about a second). A manifest whose class labels
    name another vocabulary than the spec's classes (the official BLADES JSON's) is an error naming both."""
    manifest = Path(manifest)
    root = str(manifest_root(manifest))
    with closing(open_manifest(manifest)) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        labels = ", ".join(f"f.{t}_label" for t in TASKS)
        if "faces" in tables:
            parts = ", ".join(f"IFNULL(g.{c}, {_NO_NUMBER})" for c in PART_COLUMNS)
            join = "LEFT JOIN faces g ON g.path = f.path"
            faces = f"g.reason, g.source, IFNULL(g.size, -1) = f.size AND IFNULL(g.mtime_ns, -1) = f.mtime_ns, {parts}"
        else:  # a schema-1 manifest opened read-only: no faces
            join, faces = "", f"NULL, NULL, 0, {', '.join([str(_NO_NUMBER)] * len(PART_COLUMNS))}"
        rows = db.execute(
            f"SELECT f.path, f.reason, IFNULL(f.width, 0), IFNULL(f.height, 0), {labels}, {faces} "
            f"FROM files f {join} ORDER BY f.path"
        ).fetchall()
    if not rows:
        raise ValueError(f"{manifest}: the manifest has no files")
    vocabulary = json.loads(meta["vocabulary"]) if "vocabulary" in meta else None
    _check_vocabulary(manifest, vocabulary, spec)
    columns = list(zip(*rows))
    n, k = len(rows), 4 + len(TASKS)
    paths = [f"{root}/{rel}" for rel in columns[0]]
    skip = {i: f"manifest: {r}" for i, r in enumerate(columns[1]) if r is not None and r not in MANIFEST_USABLE_REASONS}
    sizes = np.stack([np.asarray(columns[2], dtype=np.int64), np.asarray(columns[3], dtype=np.int64)], axis=1)
    targets = targets_from_columns(dict(zip(TASKS, columns[4:k])), n, spec, bins)
    face_reasons, sources, fresh = columns[k], columns[k + 1], columns[k + 2]
    part_values = np.asarray(columns[k + 3 : k + 3 + len(PART_COLUMNS)], dtype=np.float64).T
    part_values[part_values <= _NO_NUMBER / 2] = np.nan
    for i, (source, ok) in enumerate(zip(sources, fresh)):
        if source is not None and not source.startswith("table:") and not ok:  # detected on an older file
            part_values[i] = np.nan
    return ManifestItems(
        paths,
        part_values,
        sizes,
        targets,
        skip,
        {i: r for i, r in enumerate(face_reasons) if r is not None},
        vocabulary,
    )


def _check_vocabulary(manifest: Path, vocabulary, spec) -> None:
    if vocabulary is None:
        return
    for task in spec.tasks:
        given = vocabulary.get(task.name)
        if given is not None and task.kind == "categorical" and list(task.classes) != list(given):
            raise ValueError(
                f"{manifest}: its {task.name} labels name the classes {given} (as the table gave them), but the "
                f"task spec's {task.name} head has {list(task.classes)}; build the spec with "
                "blades_spec(classes=<the manifest's vocabulary>) (pretrain does so by itself)"
            )


def manifest_vocabulary(manifest: str | os.PathLike) -> dict[str, list[str]] | None:
    """The class vocabulary a manifest's labels name when it is not bfdkern's (imported from the official
    BLADES JSON), else None."""
    with closing(open_manifest(manifest)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'vocabulary'").fetchone()
    return None if row is None else json.loads(row[0])


def mark_prepared(manifest: Path, want: dict) -> None:
    """Record that ``manifest`` holds what ``want`` asked for (rank 0, when it has written it)."""
    with lock_manifest(manifest), closing(_connect(manifest)) as db, db:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('prepared', ?)", (json.dumps(want, sort_keys=True),))


def wait_until_prepared(manifest: Path, want: dict, poll_s: float = 0.5, echo=None) -> None:
    """Block until rank 0 has prepared ``manifest`` for ``want`` (the other ranks of a torchrun job read it,
    never write it). Says once a minute that it is still waiting."""
    want_text = json.dumps(want, sort_keys=True)
    echo = echo or (lambda m: print(m, file=sys.stderr))
    started = last = time.monotonic()
    while True:
        try:
            if Path(manifest).is_file():
                with closing(sqlite3.connect(f"{Path(manifest).resolve().as_uri()}?mode=ro", uri=True)) as db:
                    row = db.execute("SELECT value FROM meta WHERE key = 'prepared'").fetchone()
                if row is not None and row[0] == want_text:
                    return
        except sqlite3.Error:
            pass  # created or written by rank 0 right now
        if time.monotonic() - last > 60:
            last = time.monotonic()
            echo(f"{manifest}: waiting for rank 0 to index it ({time.monotonic() - started:.0f} s so far)")
        time.sleep(poll_s)
