"""The manifest builder: rows and reasons, incremental re-runs, resuming after a crash, time and
size bounds per file, and reading labels back."""

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from bfdkern.exif import TASKS, build_manifest, fit_bins, read_labels
from bfdkern.exif.manifest import COLUMNS, FILE_REASONS, IMAGE_EXTENSIONS, scan
from bfdkern.exif.parse import REASONS
from bfdkern.exif.reader import PillowBackend
from tests.exif import photos


def _collection(root: Path, n: int = 12) -> dict[str, dict]:
    """n photos with known, varied tags in nested folders, plus hostile files; rel path -> expected."""
    expected = {}
    for i in range(n):
        tags = dict(photos.CAMERA_TAGS)
        tags["Exif.Photo.FNumber"] = f"{20 + i}/10"
        tags["Exif.Photo.ISOSpeedRatings"] = str(100 * (i + 1))
        rel = f"{'sub/' if i % 2 else ''}{'deeper/' if i % 3 == 0 else ''}p{i:02d}.JPG"
        photos.write_photo(root / rel, tags, color=(i * 20, 50, 50))
        expected[rel] = {"aperture": (20 + i) / 10, "iso": 100.0 * (i + 1)}
    full = (root / next(iter(expected))).read_bytes()
    hostile = {
        "bad/empty.jpg": (b"", "empty_file"),
        "bad/text.jpg": (b"plain text\n", "unrecognised_format"),
        "bad/bomb.jpg": (photos.bomb(full), "decompression_bomb"),
        "bad/loop.jpg": (photos.looping_exif(), None),
        "bad/offsets.jpg": (photos.out_of_range_exif(), None),
    }
    for rel, (data, reason) in hostile.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        expected[rel] = {"reason": reason}
    photos.write_photo(root / "bad" / "noexif.jpg", {})
    expected["bad/noexif.jpg"] = {"reason": "no_exif"}
    (root / "notes.txt").write_text("not an image")
    return expected


def _rows(manifest: Path) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(manifest) as db:
        db.row_factory = sqlite3.Row
        return {r["path"]: r for r in db.execute("SELECT * FROM files")}


@pytest.mark.parametrize("workers", [0, 2])
def test_every_file_gets_labels_or_a_reason(tmp_path, workers):
    root = tmp_path / "photos"
    expected = _collection(root)
    manifest = tmp_path / "m.sqlite"
    report = build_manifest(root, manifest, workers=workers, progress=False)
    assert report.scanned == len(expected) and report.indexed == len(expected) and report.skipped_other == 1
    rows = _rows(manifest)
    assert set(rows) == set(expected)
    for rel, want in expected.items():
        row = rows[rel]
        has_label = any(row[f"{t}_label"] is not None for t in TASKS)
        assert has_label != (row["reason"] is not None), rel
        if row["reason"]:
            assert row["reason"] in FILE_REASONS
            if row["reason"] not in ("no_exif", "no_usable_tags"):
                assert rel in row["detail"], "the detail names the file"
        if "reason" in want and want["reason"] is not None:
            assert row["reason"] == want["reason"], rel
        if "aperture" in want:
            assert row["aperture_label"] == pytest.approx(want["aperture"]) and row["aperture_raw"].endswith("/10")
            assert (
                row["iso_label"] == want["iso"]
                and row["make_label"] == "Nikon"
                and row["make_value"] == ("NIKON CORPORATION")
            )
            assert row["metering_mode_value"] == 5 and row["metering_mode_label"] == "pattern"
            assert row["sha256"] == hashlib.sha256((root / rel).read_bytes()).hexdigest()
        for t in ("aperture", "exposure_time", "make", "white_balance"):
            assert row[f"{t}_reason"] is None or row[f"{t}_reason"] in REASONS
    assert rows["bad/loop.jpg"]["make_label"] == "Canon"
    assert rows["bad/offsets.jpg"]["exposure_time_label"] == pytest.approx(1 / 60)
    assert report.labelled == sum(r["reason"] is None for r in rows.values())
    assert sum(report.reasons.values()) + report.labelled == len(expected)


def test_rerun_reads_only_what_changed(tmp_path):
    root = tmp_path / "photos"
    expected = _collection(root, n=8)
    manifest = tmp_path / "m.sqlite"
    build_manifest(root, manifest, workers=2, progress=False)
    again = build_manifest(root, manifest, workers=2, progress=False)
    assert again.indexed == 0 and again.unchanged == len(expected)
    # Change one photo, add one, delete one.
    changed = root / "deeper" / "p00.JPG"
    photos.write_photo(changed, {"Exif.Image.Make": "Canon", "Exif.Photo.FNumber": "56/10"})
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    photos.write_photo(root / "new" / "added.jpg")
    (root / "sub" / "p01.JPG").unlink()
    third = build_manifest(root, manifest, workers=2, progress=False)
    assert (third.indexed, third.removed, third.unchanged) == (2, 1, len(expected) - 2)
    rows = _rows(manifest)
    assert rows["deeper/p00.JPG"]["make_label"] == "Canon" and rows["deeper/p00.JPG"]["aperture_label"] == 5.6
    assert "new/added.jpg" in rows and "sub/p01.JPG" not in rows
    # Another backend's rows are not reused.
    fourth = build_manifest(root, manifest, workers=0, backend="pillow", progress=False)
    assert fourth.indexed == len(rows)


def test_interrupted_run_keeps_what_it_indexed_and_resumes(tmp_path):
    root = tmp_path / "photos"
    expected = _collection(root, n=30)
    manifest = tmp_path / "m.sqlite"
    committed = []

    def crash_after_two_batches(n):
        committed.append(n)
        if len(committed) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_manifest(root, manifest, workers=2, progress=False, batch_size=4, on_batch=crash_after_two_batches)
    kept = _rows(manifest)
    assert len(kept) == sum(committed) == 8
    resumed = build_manifest(root, manifest, workers=2, progress=False)
    assert resumed.unchanged == 8 and resumed.indexed == len(expected) - 8
    assert set(_rows(manifest)) == set(expected)


class _HostileBackend(PillowBackend):
    """Pillow, except that it hangs on files holding b'HANG' and dies on files holding b'DIE'."""

    name = "pillow"

    def read(self, data, label="<bytes>"):
        if b"HANG" in data:
            time.sleep(3600)
        if b"DIE" in data:
            os._exit(3)
        return super().read(data, label)


def test_hanging_and_crashing_files_are_bounded(tmp_path):
    root = tmp_path / "photos"
    for i in range(10):
        photos.write_photo(root / f"ok{i}.jpg")
    (root / "hang.jpg").write_bytes(b"HANG")
    (root / "die.jpg").write_bytes(b"DIE")
    (root / "huge.jpg").write_bytes(photos.jpeg_bytes() + b"\0" * 5000)
    manifest = tmp_path / "m.sqlite"
    start = time.monotonic()
    report = build_manifest(
        root,
        manifest,
        workers=2,
        backend=_HostileBackend(),
        timeout_s=1.0,
        max_bytes=4000,
        batch_size=3,
        progress=False,
    )
    assert time.monotonic() - start < 20
    rows = _rows(manifest)
    assert len(rows) == 13 and report.indexed == 13
    assert rows["hang.jpg"]["reason"] == "timeout" and "hang.jpg" in rows["hang.jpg"]["detail"]
    assert rows["die.jpg"]["reason"] == "crash" and "exit code 3" in rows["die.jpg"]["detail"]
    assert rows["huge.jpg"]["reason"] == "too_large" and rows["huge.jpg"]["sha256"] is None
    assert all(rows[f"ok{i}.jpg"]["make_label"] == "Nikon" for i in range(10))


def test_a_worker_stuck_before_its_first_file_is_timed_out(tmp_path, monkeypatch):
    """A worker that never begins its batch (a library hanging in a forked child) is killed after
    timeout_s like one stuck on a file; after one fresh try the batch's files get a reason, and the run
    ends instead of waiting forever."""
    import bfdkern.exif.manifest as manifest_module

    root = tmp_path / "photos"
    for i in range(4):
        photos.write_photo(root / f"ok{i}.jpg")
    monkeypatch.setattr(manifest_module, "die_with_parent", lambda parent_pid: time.sleep(60))  # workers fork
    start = time.monotonic()
    report = build_manifest(root, tmp_path / "m.sqlite", workers=2, timeout_s=0.5, batch_size=2, progress=False)
    assert time.monotonic() - start < 20
    rows = _rows(tmp_path / "m.sqlite")
    assert report.indexed == 4 and {r["reason"] for r in rows.values()} == {"timeout"}
    assert all("stuck for 0.5 s before reading it" in r["detail"] and name in r["detail"] for name, r in rows.items())


def test_bad_arguments_name_the_problem(tmp_path):
    root = tmp_path / "photos"
    photos.write_photo(root / "a.jpg")
    with pytest.raises(NotADirectoryError, match="nowhere: not a folder"):
        build_manifest(tmp_path / "nowhere", tmp_path / "m.sqlite", progress=False)
    with pytest.raises(FileNotFoundError, match="the folder .*nodir does not exist"):
        build_manifest(root, tmp_path / "nodir" / "m.sqlite", progress=False)
    (tmp_path / "junk.sqlite").write_bytes(b"this is no database at all, just some bytes" * 50)
    with pytest.raises(ValueError, match="junk.sqlite: not a usable SQLite manifest"):
        build_manifest(root, tmp_path / "junk.sqlite", progress=False)
    build_manifest(root, tmp_path / "m.sqlite", workers=0, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ValueError, match="indexes .*photos, not .*other"):
        build_manifest(other, tmp_path / "m.sqlite", progress=False)


def test_labels_read_back_and_bins_fit(tmp_path):
    root = tmp_path / "photos"
    expected = _collection(root, n=12)
    manifest = tmp_path / "m.sqlite"
    build_manifest(root, manifest, workers=0, progress=False)
    paths, labels = read_labels(manifest)
    assert len(paths) == sum(1 for e in expected.values() if "aperture" in e) + 2  # + loop.jpg, offsets.jpg
    assert all(p.is_file() and p.is_absolute() for p in paths)
    by_name = dict(zip((p.name for p in paths), labels))
    assert by_name["p03.JPG"]["iso"] == 400.0 and by_name["p03.JPG"]["exposure_mode"] == "manual"
    bins = fit_bins(manifest, levels=3)
    assert bins.levels["iso"] == 3
    assert bins.level("iso", 100.0) == 0 and bins.level("iso", 1200.0) == 2
    # The manifest is plain SQLite: the labels view is queryable by anyone.
    with sqlite3.connect(manifest) as db:
        n = db.execute("SELECT COUNT(*) FROM labels WHERE make = 'Nikon' AND iso >= 600").fetchone()[0]
    assert n == 7


def test_scan_and_columns(tmp_path):
    photos.write_photo(tmp_path / "a" / "b.JPEG")
    (tmp_path / "c.txt").write_text("x")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a link back up must not recurse forever
    items, others, problems, special = scan(tmp_path)
    assert [i[0] for i in items] == ["a/b.JPEG"] and others == 1 and problems == []
    assert special == {"link to a folder": 1}
    # A name with bytes that are not UTF-8 cannot go into SQLite text: reported, not lost silently.
    os.rename(tmp_path / "a" / "b.JPEG", os.path.join(os.fsencode(tmp_path), b"a", b"\xff.jpg"))
    photos.write_photo(tmp_path / "ok.jpg")
    report = build_manifest(tmp_path, tmp_path / "m.sqlite", workers=0, progress=False)
    assert report.indexed == 1 and len(report.not_indexed) == 1 and "not UTF-8" in report.not_indexed[0]
    assert "not UTF-8" in str(report)
    assert ".jpg" in IMAGE_EXTENSIONS and ".heic" in IMAGE_EXTENSIONS
    assert COLUMNS[0] == "path" and len(COLUMNS) == len(set(COLUMNS))


class _EchoJob:
    def __call__(self, item):
        return item

    def failed(self, item, reason, detail):
        return (item, reason)


def test_a_worker_that_cannot_start_leaves_nothing_behind(tmp_path, monkeypatch):
    """When starting the second worker fails (fork refused), the error reaches the caller, the worker
    already started is stopped, and OpenCV's thread count in this process is back where it was."""
    cv2 = pytest.importorskip("cv2")
    import bfdkern.exif.manifest as manifest_module

    real_worker, started = manifest_module._Worker, []

    def worker_or_refusal(ctx, job):
        if started:
            raise OSError("fork refused")
        started.append(real_worker(ctx, job))
        return started[-1]

    monkeypatch.setattr(manifest_module, "_Worker", worker_or_refusal)
    before = cv2.getNumThreads()
    batches = [[("a", 1, 1)], [("b", 1, 1)]]
    with pytest.raises(OSError, match="fork refused"):
        list(manifest_module.run_workers(str(tmp_path), batches, 2, _EchoJob(), timeout_s=5.0))
    assert cv2.getNumThreads() == before
    assert len(started) == 1 and not started[0].process.is_alive()
