"""`bfdkern pretrain` ablation options: --preset, --fixed-lambda, --outer-every, --tasks, --drop-tasks."""

import pytest

from bfdkern import cli
from bfdkern.recipes.presets import PRESETS, get_preset, tasks_without
from bfdkern.tasks import blades_spec
from bfdkern.training import PretrainConfig

SMALL = ["--epochs", "1", "--batch-size", "8", "--image-size", "16", "--backbone", "small", "--feature-dim", "8"]
SMALL += ["--lr", "1e-3", "--workers", "0", "--device", "cpu", "--quiet", "--max-steps", "2"]


def _pretrain(photos, run, *options):
    return cli.main(["pretrain", "--data", str(photos), "--out", str(run), *SMALL, *options])


def test_preset_and_override(photos, tmp_path, capsys):
    run = tmp_path / "zou"
    assert _pretrain(photos, run, "--preset", "zou25", "--outer-every", "3") == 0
    out = capsys.readouterr().out
    config = PretrainConfig.load(run)
    assert config.tasks == ["iso", "aperture", "exposure_time", "focal_length", "manipulated"]
    assert config.fixed_lambda and config.outer_every == 3
    assert "make" not in out and "focal_length" in out  # the loss table lists the trained tasks only
    # The preset is part of the run: resuming with it again is fine, without a different one is not.
    assert cli.main(["pretrain", "--out", str(run), "--resume", "--preset", "zou25", "--quiet"]) == 0
    assert cli.main(["pretrain", "--out", str(run), "--resume", "--preset", "no-region", "--quiet"]) == 2
    assert "these options differ from it: tasks" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, field, expected",
    [
        (["--drop-tasks", "categorical,region"], "tasks", tasks_without("categorical", "region")),
        (["--tasks", "iso,manipulated"], "tasks", ["iso", "manipulated"]),
        (["--fixed-lambda"], "fixed_lambda", True),
    ],
)
def test_options_reach_the_config(photos, tmp_path, options, field, expected):
    assert _pretrain(photos, tmp_path / "run", *options) == 0
    assert getattr(PretrainConfig.load(tmp_path / "run"), field) == expected


@pytest.mark.parametrize(
    "options, message",
    [
        (["--preset", "bogus"], "unknown preset 'bogus'"),
        (["--drop-tasks", "colour"], "unknown tasks or task kinds ['colour']"),
        (["--tasks", "iso"], "drops the outer task"),
        (["--tasks", "iso,,manipulated"], "expected comma-separated names"),
        (["--tasks", "iso,manipulated", "--drop-tasks", "region"], "exclude each other"),
    ],
)
def test_bad_options_are_clear_errors(photos, tmp_path, capsys, options, message):
    assert _pretrain(photos, tmp_path / "run", *options) == 2
    assert message in capsys.readouterr().err


def test_every_preset_is_a_valid_configuration():
    names = set(blades_spec().names)
    for name, preset in PRESETS.items():
        assert get_preset(name) is preset
        spec = PretrainConfig(**preset.pretrain).task_spec()
        assert set(spec.names) <= names and "manipulated" in spec.names
    assert tasks_without("ordinal") == [n for n in blades_spec().names if n not in spec.names[:4]]
