"""PretrainConfig: the paper's defaults, config.json round trip, clear errors, what a resumed run may change."""

import json

import pytest

from bfdkern.training import PretrainConfig
from bfdkern.training.config import EXECUTION_FIELDS


def test_defaults_are_the_papers():
    c = PretrainConfig()
    assert (c.lr, c.weight_decay, c.epochs, c.batch_size, c.lambda_lr, c.mode) == (1e-5, 1e-3, 20, 48, 3e-4, "fd")
    assert (c.image_size, c.backbone, c.feature_dim, c.lambda_init) == (224, "resnet50", 768, 1.0)
    assert (c.ordinal_levels, c.outer_every, c.val_fraction) == (3, 1, 0.0)  # 3-level heads; lambda every step
    assert c.task_spec()["region"].classes == ("mouth", "eye")
    assert (c.precision, c.tf32, c.compile, c.logger) == ("fp32", False, False, "csv")


def test_a_config_from_before_ordinal_levels_keeps_its_one_column_heads(tmp_path):
    data = PretrainConfig(data="/x").to_dict()
    del data["ordinal_levels"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert PretrainConfig.load(tmp_path).ordinal_levels == 1


def test_json_round_trip(tmp_path):
    c = PretrainConfig(data="/x", epochs=3, lr=2e-3, backbone="small", max_steps=7, device="cpu")
    path = c.save(tmp_path)
    assert json.loads(path.read_text())["lr"] == 2e-3
    assert PretrainConfig.load(tmp_path) == c


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lr", 0.0, "lr must be > 0"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("mode", "xx", "mode must be one"),
        ("backbone", "vgg", "backbone must be one"),
        ("val_fraction", 1.0, "val_fraction"),
        ("image_size", 4, "image_size must be >= 8"),
        ("ordinal_levels", 0, "ordinal_levels must be >= 1"),
        ("precision", "fp16", "precision must be one of \\['fp32', 'bf16'\\]"),
        ("logger", "mlflow", "logger must be one of"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**{field: value})


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        PretrainConfig.load(tmp_path)
    (tmp_path / "config.json").write_text('{"lr": 1e-3, "colour": 1}')
    with pytest.raises(ValueError, match=r"config.json: unknown configuration keys \['colour'\]"):
        PretrainConfig.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        PretrainConfig.load(tmp_path)


def test_a_resumed_run_may_change_only_how_it_executes():
    c = PretrainConfig(data="/x", lr=1e-3)
    resumed = c.resumed_with({"device": "cpu", "workers": 0, "max_steps": 9, "lr": 1e-3})
    assert (resumed.device, resumed.workers, resumed.max_steps, resumed.lr) == ("cpu", 0, 9, 1e-3)
    with pytest.raises(ValueError, match=r"lr 0.01 \(the run has 0.001\)"):
        c.resumed_with({"lr": 1e-2, "workers": 1})
    assert {"device", "workers", "max_steps", "precision", "tf32", "compile", "logger"} <= set(EXECUTION_FIELDS)
    longer = c.resumed_with({"epochs": 30, "precision": "bf16", "logger": "tensorboard"})
    assert (longer.epochs, longer.precision, longer.logger) == (30, "bf16", "tensorboard")
    with pytest.raises(
        ValueError, match="epochs 10 \\(the run has 20; a resumed run may lengthen it, not shorten it\\)"
    ):
        c.resumed_with({"epochs": 10})
