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
        "default 3, as in BLADES",
        "default fp32",
        "default csv",
        "--config FILE",
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


def test_init_weights_that_are_a_pickled_model_are_one_line(photos, tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    import torch

    torch.save(torchvision.models.resnet18(), tmp_path / "resnet18.pth")  # the model, not its state dict
    run = tmp_path / "run"
    argv = ["--init", str(tmp_path / "resnet18.pth"), "--backbone", "resnet18"]
    assert cli.main(["pretrain", "--data", str(photos), "--out", str(run), *SMALL, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "resnet18.pth: cannot be read as a weights-only torch weights file: it holds a pickled " in err
    assert "torchvision.models.resnet.ResNet object (a whole model?)" in err and "save its state_dict() instead" in err
    assert not run.exists()


def test_config_file_then_command_line(photos, tmp_path, capsys):
    """--config FILE holds the options (the run folder too); the command line overrides them; config.json holds
    the configuration the run used."""
    run = tmp_path / "run"
    (tmp_path / "run.toml").write_text(
        f'data = "{photos}"\nout = "{run}"\nepochs = 2\nbatch-size = 16\nimage-size = 16\nbackbone = "small"\n'
        'feature-dim = 16\nlr = 1e-3\nworkers = 0\ndevice = "cpu"\nquiet = true\nmax-steps = 1\nordinal-levels = 1\n'
    )
    assert cli.main(["pretrain", "--config", str(tmp_path / "run.toml"), "--lr", "0.002", "--seed", "7"]) == 0
    config = PretrainConfig.load(run)
    assert (config.lr, config.seed, config.batch_size, config.ordinal_levels, config.max_steps) == (0.002, 7, 16, 1, 1)
    assert config.data == str(photos.resolve()) and not config.progress
    (tmp_path / "bad.toml").write_text('out = "x"\nbatch-sise = 16\n')
    assert cli.main(["pretrain", "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bfdkern pretrain: error: {tmp_path / 'bad.toml'}: unknown option 'batch-sise' (options: ")
    assert err.count("\n") == 1


def test_ordinal_heads_default_to_three_levels(photos, tmp_path):
    from bfdkern.models import load_model

    run = tmp_path / "run"
    assert cli.main(["pretrain", "--data", str(photos), "--out", str(run), *SMALL, "--max-steps", "1"]) == 0
    spec = load_model(run).spec
    assert [t.num_columns for t in spec if t.kind == "ordinal"] == [3, 3, 3, 3]
    assert PretrainConfig.load(run).ordinal_levels == 3
