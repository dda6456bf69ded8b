"""Faults around the manifest: a full disk stops `bfdkern index` with one line naming the path and the
space needed and leaves the manifest intact; two writers never meet inside SQLite."""

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bfdkern.cli import main
from bfdkern.exif import build_manifest
from bfdkern.exif.manifest import ManifestBusyError, lock_manifest
from tests.exif import photos


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i in range(120):
        tags = dict(photos.CAMERA_TAGS, **{"Exif.Photo.ISOSpeedRatings": str(100 + i)})
        photos.write_photo(root / f"p{i:03d}.jpg", tags)
    return root


@pytest.fixture
def small_disk(tmp_path):
    """A 160 KiB tmpfs (root only); skips where it cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_stops_with_one_line_and_keeps_the_manifest(collection, small_disk, capsys):
    manifest = small_disk / "m.sqlite"
    code = main(["index", str(collection), "-o", str(manifest), "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(manifest) in err and "disk is full" in err and "free at least" in err and "MiB" in err
    assert "Traceback" not in err and "OperationalError" not in err
    with sqlite3.connect(manifest) as db:  # intact, with the batches committed before the disk filled
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    assert 0 < kept < 120
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)  # space freed: resume
    report = build_manifest(collection, manifest, workers=0, progress=False)
    assert report.unchanged == kept and report.indexed == 120 - kept


def test_a_second_writer_is_refused_with_the_holders_pid(collection, tmp_path):
    manifest = tmp_path / "m.sqlite"
    with lock_manifest(manifest), pytest.raises(ManifestBusyError, match=rf"another process \(pid {os.getpid()}\)"):
        build_manifest(collection, manifest, workers=0, progress=False)
    assert not manifest.exists()  # nothing was touched
    build_manifest(collection, manifest, workers=0, progress=False)  # the lock is free again


RACER = textwrap.dedent(
    """
    import sys, time
    from bfdkern.cli import main
    from bfdkern.exif import reader

    class Slow(reader.PillowBackend):  # 50 ms a file: the two runs overlap for certain
        def read(self, data, label="<bytes>"):
            time.sleep(0.05)
            return super().read(data, label)

    reader.BACKENDS["pillow"] = Slow
    while time.monotonic() < float(sys.argv[3]):
        pass
    sys.exit(main(["index", sys.argv[1], "-o", sys.argv[2], "--workers", "1", "--backend", "pillow",
                   "--no-progress"]))
    """
)


def test_two_index_runs_creating_one_manifest_at_once(collection, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
    for attempt in range(1):
        manifest = tmp_path / f"m{attempt}.sqlite"
        start = time.monotonic() + 2.0  # both interpreters are up by then
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(collection), str(manifest), str(start)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(p.wait(60), *p.communicate()) for p in procs]
        for _, _, err in results:
            assert "database is locked" not in err and "Traceback" not in err, err
        assert sorted(code for code, _, _ in results) == [0, 2], results  # one indexes, the other is refused
        refused = next(err for code, _, err in results if code == 2)
        assert len(refused.strip().splitlines()) == 1 and "is updating this manifest; run again" in refused
        with sqlite3.connect(manifest) as db:
            assert db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 120
