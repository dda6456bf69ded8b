"""`torchrun --nproc-per-node 2 -m bfdkern pretrain` end to end on the CPU (gloo): the command the README
gives for several GPUs, started the way users start it. Rank 0 alone reports and writes; the run's log has
one row a step; its checkpoint continues in a single process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bfdkern import cli
from bfdkern.training import read_log
from tests.training.test_command import SMALL

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_pretrain_then_single_process_resume(photos, tmp_path, capsys):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "bfdkern", "pretrain", "--data", str(photos), "--out", str(run), "--max-steps", "2", *SMALL,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Rank 0 alone prints the summary; each of the two ranks trains on half of every batch of 16.
    assert done.stdout.count("encoder written to") == 1, done.stdout
    assert "distributed: 2 processes (gloo), each trains on 8 of every batch of 16" in done.stdout
    assert "step 2 of" in done.stdout
    assert read_log(run)["step"].tolist() == [1, 2]
    assert (run / "checkpoint.pt").is_file()

    assert cli.main(["pretrain", "--out", str(run), "--resume", "--max-steps", "3", "--quiet"]) == 0
    assert "step 3 of" in capsys.readouterr().out
    assert read_log(run)["step"].tolist() == [1, 2, 3]
