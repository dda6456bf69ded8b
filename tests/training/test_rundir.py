"""Run directories: a start that fails or is killed before its first checkpoint never blocks its folder, a
kill at any moment leaves a folder that starts or resumes, leftovers of killed writes are removed, and one
session at a time uses a folder (the others are refused with the holder's pid).

The kill tests really SIGKILL a `bfdkern pretrain` process (tests/training/paused_pretrain.py stops it at
the moment under test)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest
import torch

from bfdkern import cli
from bfdkern.models import load_model
from bfdkern.training import PretrainConfig, load_checkpoint, pretrain, read_log
from bfdkern.training.rundir import LOCK_NAME, RunDirInUse, RunLock
from tests.helpers import ROOT
from tests.training.test_command import SMALL


def _argv(photos, run, *extra):
    return ["--data", str(photos), "--out", str(run), *SMALL, "--checkpoint-every", "1", *extra]


def _paused(moment: str, argv: list[str], timeout: float = 300) -> subprocess.Popen:
    """A `bfdkern pretrain ARGV` process stopped at ``moment`` (see paused_pretrain.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.training.paused_pretrain", moment, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            proc.kill()
            raise AssertionError(f"pretrain never reached {moment}")
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"pretrain exited ({proc.wait()}) before {moment}: {proc.stderr.read().decode()}")
        if line.strip() == b"PAUSED":
            return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def _same_models(a, b) -> None:
    for (name, x), y in zip(load_model(a).state_dict().items(), load_model(b).state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.slow
@pytest.mark.parametrize("again", ["same command", "--resume"])
def test_kill_during_the_first_checkpoint_leaves_a_folder_that_starts_again(photos, tmp_path, capsys, again):
    run, straight = tmp_path / "run", tmp_path / "straight"
    argv = _argv(photos, run, "--max-steps", "3")
    _kill(_paused("checkpoint:1", argv))
    names = sorted(p.name for p in run.iterdir())
    leftovers = [n for n in names if n.startswith("checkpoint.pt.") and n.endswith(".tmp")]
    assert "checkpoint.pt" not in names and len(leftovers) == 1 and "config.json" in names
    assert (run / leftovers[0]).stat().st_size > 0  # half a checkpoint

    second = ["pretrain", *argv] if again == "same command" else ["pretrain", "--out", str(run), "--resume"]
    assert cli.main(second) == 0
    out = capsys.readouterr().out
    assert "saved no checkpoint" in out or "holds no checkpoint" in out
    assert "removed 1 temporary file(s) of an interrupted write" in out
    assert not list(run.glob("*.tmp")) and not (run / LOCK_NAME).exists()
    assert read_log(run)["step"].tolist() == [1, 2, 3]
    assert load_checkpoint(run / "checkpoint.pt")["trainer"]["steps"] == 3
    # The start after the kill is a clean start: the same model as a run that was never killed.
    assert cli.main(["pretrain", *_argv(photos, straight, "--max-steps", "3")]) == 0
    _same_models(run, straight)


@pytest.mark.slow
def test_kill_before_anything_is_written(photos, tmp_path):
    run = tmp_path / "run"
    _kill(_paused("scan", _argv(photos, run, "--max-steps", "1")))
    # Only the lock file (the OS released its lock with the process) is there: no run files.
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    assert cli.main(["pretrain", *_argv(photos, run, "--max-steps", "1", "--quiet")]) == 0
    assert read_log(run)["step"].tolist() == [1]


@pytest.mark.slow
def test_kill_mid_run_resumes_and_a_second_session_is_refused(photos, tmp_path, capsys):
    run = tmp_path / "run"
    argv = _argv(photos, run, "--max-steps", "4")
    proc = _paused("step:3", argv)
    try:
        # While it runs, neither a new start nor a resume may use the folder.
        assert cli.main(["pretrain", *argv]) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"bfdkern pretrain: error: {run}: in use by another bfdkern session (pid {proc.pid}); wait for it to end, or choose another --out\n"
        )
        assert cli.main(["pretrain", "--out", str(run), "--resume"]) == 2
        assert f"(pid {proc.pid})" in capsys.readouterr().err
        assert (run / LOCK_NAME).read_text().strip() == str(proc.pid)  # the refused sessions left it alone
    finally:
        _kill(proc)
    assert load_checkpoint(run / "checkpoint.pt")["trainer"]["steps"] == 2
    assert cli.main(["pretrain", *argv]) == 2
    assert "already holds a pretraining run; pass --resume" in capsys.readouterr().err
    assert cli.main(["pretrain", "--out", str(run), "--resume"]) == 0
    assert read_log(run)["step"].tolist() == [1, 2, 3, 4]


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    assert first.created_dir and first.path.read_text() == f"{os.getpid()}\n"
    with pytest.raises(RunDirInUse, match=f"in use by another bfdkern session \\(pid {os.getpid()}\\)"):
        RunLock(tmp_path / "run").acquire()  # a second open file description: refused as another process would be
    first.release()
    assert not first.path.exists()
    second = RunLock(tmp_path / "run").acquire()
    assert not second.created_dir
    second.release(failed=True)  # it did not create the folder: the folder stays
    assert (tmp_path / "run").is_dir()


def _config(photos, **kw):
    base = dict(
        data=str(photos), epochs=2, batch_size=16, image_size=16, backbone="small", feature_dim=16, lr=1e-3,
        workers=0, device="cpu", checkpoint_every=0, progress=False,
    )  # fmt: skip
    return PretrainConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(batch_size=64), "fewer than one batch of 64"),
        (dict(backbone="resnet18", init="MISSING"), "no such"),
        (dict(logger="wandb"), "needs the wandb package"),
        (dict(device="cuda"), "device 'cuda': "),
    ],
    ids=["too few images", "missing weights", "missing logger package", "no such device"],
)
def test_a_start_that_cannot_begin_leaves_nothing(photos, tmp_path, change, message):
    if change.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if change.get("logger") == "wandb":
        try:
            import wandb  # noqa: F401

            pytest.skip("wandb is installed here")
        except ImportError:
            pass
    if change.get("init") == "MISSING":
        change = {**change, "init": str(tmp_path / "missing.pth")}
    with pytest.raises((ValueError, OSError), match=message):
        pretrain(_config(photos, **change), tmp_path / "new", echo=lambda m: None)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises((ValueError, OSError), match=message):
        pretrain(_config(photos, **change), existing, echo=lambda m: None)
    assert list(existing.iterdir()) == []


def test_a_start_that_failed_after_it_began_can_be_started_again(photos, tmp_path):
    run = tmp_path / "run"

    def fail(record):
        raise RuntimeError("the machine fell over")

    with pytest.raises(RuntimeError, match="fell over"):
        pretrain(_config(photos, max_steps=3), run, echo=lambda m: None, on_step=fail)
    assert (run / "config.json").is_file() and not (run / "checkpoint.pt").exists()
    assert not (run / LOCK_NAME).exists()  # released on the way out
    messages = []
    result = pretrain(_config(photos, max_steps=1, seed=5), run, echo=messages.append, plots=False)
    assert result.steps == 1 and PretrainConfig.load(run).seed == 5  # the new configuration replaced the old
    assert any("an earlier start saved no checkpoint; starting again" in m for m in messages)
    assert read_log(run)["step"].tolist() == [1]


def test_leftover_temporary_files_are_removed_at_the_next_start(photos, tmp_path):
    run = tmp_path / "run"
    pretrain(_config(photos, max_steps=1), run, echo=lambda m: None, plots=False)
    (run / "checkpoint.pt.k9x2.tmp").write_bytes(b"\0" * 4096)
    (run / "encoder.pt.a1b2.tmp").write_bytes(b"\0")
    messages = []
    pretrain(_config(photos, max_steps=2), run, resume=True, echo=messages.append, plots=False)
    assert not list(run.glob("*.tmp"))
    assert any("removed 2 temporary file(s)" in m for m in messages)


def test_files_no_run_wrote_are_left_alone(photos, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    (folder / "draft.tmp").write_text("keep too")
    pretrain(_config(photos, max_steps=1), folder, echo=lambda m: None, plots=False)
    assert (folder / "notes.txt").read_text() == "keep" and (folder / "draft.tmp").read_text() == "keep too"
