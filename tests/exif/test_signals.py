"""Indexing workers die with their parent (kill -9 or SIGTERM), SIGTERM stops `bfdkern index` cleanly
like Ctrl-C, and a re-run resumes. The parent is a real process that the test kills."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bfdkern.exif import build_manifest
from tests.exif import photos

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find workers")

# The parent: indexes PHOTOS into MANIFEST with a Pillow reader slowed to 0.2 s a file.
PARENT = textwrap.dedent(
    """
    import sys, time
    from bfdkern.exif import reader

    class Slow(reader.PillowBackend):
        def read(self, data, label="<bytes>"):
            time.sleep(0.2)
            return super().read(data, label)

    reader.BACKENDS["pillow"] = Slow
    if sys.argv[1] == "cli":
        from bfdkern.cli import main
        sys.exit(main(["index", sys.argv[2], "-o", sys.argv[3], "--workers", "2", "--backend", "pillow",
                       "--no-progress"]))
    from bfdkern.exif import build_manifest
    build_manifest(sys.argv[2], sys.argv[3], workers=2, backend="pillow", batch_size=2, progress=False)
    """
)


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children") as fh:
            out |= {int(c) for c in fh.read().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie waits for init to reap it: it is gone


def _rows(manifest: Path) -> int:
    try:
        with sqlite3.connect(manifest) as db:
            return db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    except sqlite3.Error:
        return 0


def _start(mode: str, root: Path, manifest: Path) -> tuple[subprocess.Popen, set[int]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode, str(root), str(manifest)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and (len(workers) < 2 or _rows(manifest) < 2):
        time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        workers = _children(proc.pid)
    assert len(workers) == 2 and _rows(manifest) >= 2, "the parent did not start two workers and commit rows"
    return proc, workers


def _gone_within(pids: set[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for i in range(60):
        photos.write_photo(root / f"p{i:02d}.jpg")
    return root


def test_workers_die_when_the_parent_is_killed(folder, tmp_path):
    manifest = tmp_path / "m.sqlite"
    proc, workers = _start("api", folder, manifest)
    proc.kill()  # SIGKILL: the parent runs no cleanup at all
    proc.wait(10)
    assert _gone_within(workers, 5.0), "workers outlived their killed parent"
    kept = _rows(manifest)
    report = build_manifest(folder, manifest, workers=2, backend="pillow", progress=False)  # resumes
    assert report.unchanged == kept and report.indexed == 60 - kept and _rows(manifest) == 60


def test_sigterm_stops_index_cleanly_and_resumes(folder, tmp_path):
    manifest = tmp_path / "m.sqlite"
    proc, workers = _start("cli", folder, manifest)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, (out, err)
    assert "terminated (SIGTERM)" in err and "run again to resume" in err and "Traceback" not in err
    assert _gone_within(workers, 5.0), "workers outlived the terminated parent"
    kept = _rows(manifest)
    assert 2 <= kept < 60
    report = build_manifest(folder, manifest, workers=2, backend="pillow", progress=False)
    assert report.unchanged == kept and report.indexed == 60 - kept
