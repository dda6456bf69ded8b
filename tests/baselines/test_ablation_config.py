"""The ablation switches of PretrainConfig: fixed lambda, lambda every k steps, task subsets."""

import numpy as np
import pytest

from bfdkern.tasks import blades_spec
from bfdkern.training import PretrainConfig, pretrain
from bfdkern.training.log import read_log


def _run(photos, out, **overrides):
    config = PretrainConfig(
        data=str(photos),
        epochs=1,
        batch_size=8,
        image_size=32,
        backbone="small",
        feature_dim=16,
        lr=2e-3,
        lambda_lr=1e-2,
        device="cpu",
        workers=0,
        checkpoint_every=0,
        progress=False,
        **overrides,
    )
    result = pretrain(config, out, echo=lambda message: None, plots=False)
    return result, read_log(out / "log.csv")


def _lambdas(log, spec):
    return np.stack([log[f"lambda_{name}"] for name in spec.names], axis=1)  # [steps, K]


def test_fixed_lambda_never_moves(photos, tmp_path):
    result, log = _run(photos, tmp_path / "run", fixed_lambda=True)
    assert result.steps == 6  # paired batches: 4 photos a batch
    assert np.all(_lambdas(log, blades_spec()) == 1.0)


def test_lambda_moves_only_on_outer_steps(photos, tmp_path):
    _, log = _run(photos, tmp_path / "run", outer_every=2)
    lam = _lambdas(log, blades_spec())
    moved = [not np.array_equal(lam[i], lam[i - 1] if i else np.ones_like(lam[0])) for i in range(len(lam))]
    assert moved == [True, False] * 3  # 0-based steps 0, 2, 4 are outer steps


def test_task_subset_trains_only_those_tasks(photos, tmp_path):
    keep = ["iso", "aperture", "exposure_time", "focal_length", "manipulated"]
    result, log = _run(photos, tmp_path / "run", tasks=keep)
    assert len(result.lambdas) == 5
    assert "loss_region" not in log and "loss_make" not in log and "loss_iso" in log
    assert PretrainConfig.load(tmp_path / "run").tasks == keep


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tasks": ["iso"]}, "drops the outer task"),
        ({"tasks": ["iso", "colour", "manipulated"]}, r"unknown task names \['colour'\]"),
        ({"outer_every": 0}, "outer_every must be >= 1"),
    ],
)
def test_bad_ablation_options_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**overrides)
