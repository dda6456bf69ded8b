"""A full disk: every write of a run stops with one line naming the file, the space it needs and the space
free, and the previous file (the last checkpoint) stays intact. On a real small file system: a tmpfs mounted
for the test (skipped where mounting is not permitted)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import pytest
import torch

from bfdkern import cli
from bfdkern.atomic import DiskFull, atomic_torch_save, atomic_write_text
from bfdkern.training import load_checkpoint, read_log
from tests.training.test_command import SMALL

MiB = 1 << 20


@pytest.fixture
def small_fs(tmp_path):
    """mount(size_bytes) -> a folder on a fresh tmpfs of that size; unmounted afterwards."""
    mounted = []

    def mount(size: int):
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        size = int(math.ceil(size / 4096) * 4096)
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _remount(folder, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)


def test_a_file_too_large_for_the_space_left_keeps_the_old_one(small_fs):
    fs = small_fs(MiB)
    path = atomic_torch_save({"x": torch.arange(10.0)}, fs / "checkpoint.pt")
    with pytest.raises(DiskFull) as info:
        atomic_torch_save({"x": torch.zeros(512 * 1024)}, path)  # 2 MiB of payload
    message = str(info.value)
    assert re.fullmatch(
        rf"{re.escape(str(path))}: the file system is full: it needs about 2\.1 MiB free, 10\d\d\.\d KiB are free",
        message,
    )
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(10.0))
    assert sorted(p.name for p in fs.iterdir()) == ["checkpoint.pt"]  # no temporary file left


def test_a_write_that_outgrows_its_estimate_is_still_a_disk_full(small_fs):
    """Space is checked first from the tensors' size; a payload whose pickled structure is large passes that
    check and fails mid-write, where torch says only "unexpected pos": it is reported as a full disk too."""
    fs = small_fs(MiB)
    path = atomic_torch_save({"x": torch.arange(10.0)}, fs / "state.pt")
    with pytest.raises(DiskFull, match=f"^{path}: the file system is full: it needs about .* free"):
        atomic_torch_save({"x": list(range(400_000))}, path)  # about 2 MiB pickled, no tensor
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(10.0))
    assert sorted(p.name for p in fs.iterdir()) == ["state.pt"]
    with pytest.raises(DiskFull, match="config.json: the file system is full"):
        atomic_write_text(fs / "config.json", "x" * (2 * MiB))
    assert sorted(p.name for p in fs.iterdir()) == ["state.pt"]


@pytest.mark.slow
def test_pretrain_on_a_full_disk_stops_with_one_line_and_keeps_the_checkpoint(photos, tmp_path, small_fs, capsys):
    probe = tmp_path / "probe"
    argv = ["--data", str(photos), *SMALL, "--checkpoint-every", "1", "--max-steps", "3"]
    assert cli.main(["pretrain", "--out", str(probe), *argv]) == 0
    size = (probe / "checkpoint.pt").stat().st_size
    # Room for the run's small files and one checkpoint, not for the next one beside it.
    fs = small_fs(1.6 * size)
    run = fs / "run"
    capsys.readouterr()
    assert cli.main(["pretrain", "--out", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"bfdkern pretrain: error: {run / 'checkpoint.pt'}: the file system is full: it needs about ")
    assert err.rstrip().endswith(
        f"the checkpoint of step 1 is kept; free some space, then: bfdkern pretrain --out {run} --resume"
    )
    assert load_checkpoint(run / "checkpoint.pt")["trainer"]["steps"] == 1
    assert not list(run.glob("*.tmp"))
    # With space again, the run continues from that checkpoint.
    _remount(fs, 8 * size)
    assert cli.main(["pretrain", "--out", str(run), "--resume"]) == 0
    assert read_log(run)["step"].tolist() == [1, 2, 3]
