"""`bfdkern pretrain`: a short run from the command line, resuming, and clear errors for bad options."""

import pytest

from bfdkern import cli
from bfdkern.training import PretrainConfig, read_log

SMALL = [
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--image-size",
    "16",
    "--backbone",
    "small",
    "--feature-dim",
    "16",
    "--lr",
    "1e-3",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--quiet",
]


def test_help_shows_the_papers_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in (
        "default 1e-05",
        "default 0.001",
        "default 20",
        "default 48",
        "default 0.0003",
        "default fd",
        "default 224",
        "default resnet50",
    ):
        assert default in text


def test_run_then_resume(photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["pretrain", "--data", str(photos), "--out", str(run), "--max-steps", "2", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "step 2 of 6; encoder written to" in out and "exposure_time" in out and "chance" in out
    assert f"plot (lambda): {run / 'lambda.png'}" in out
    config = PretrainConfig.load(run)
    assert (config.data, config.lr, config.backbone, config.max_steps) == (str(photos.resolve()), 1e-3, "small", 2)

    # Resuming needs no --data; execution options may change, the others may not.
    assert cli.main(["pretrain", "--out", str(run), "--resume", "--max-steps", "3", "--quiet"]) == 0
    assert "step 3 of 6" in capsys.readouterr().out
    assert read_log(run)["step"].tolist() == [1, 2, 3]
    assert cli.main(["pretrain", "--out", str(run), "--resume", "--lr", "0.01"]) == 2
    assert "a resumed run keeps its configuration; these options differ from it: lr 0.01" in capsys.readouterr().err


def test_bad_options_are_clear_errors(photos, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["pretrain", "--data", str(tmp_path / "nowhere"), "--out", run]) == 2
    assert "nowhere: no such photo folder or manifest (--data)" in capsys.readouterr().err
    assert cli.main(["pretrain", "--out", run]) == 2
    assert "--data is required for a new run" in capsys.readouterr().err
    assert cli.main(["pretrain", "--data", str(photos), "--out", run, "--batch-size", "0"]) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err
    assert cli.main(["pretrain", "--data", str(photos), "--out", run, "--batch-size", "64", *SMALL[4:]]) == 2
    assert "fewer than one batch of 64" in capsys.readouterr().err
