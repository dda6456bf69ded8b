"""Checkpoints across versions: a checkpoint of the trainer before the general engine (``data/trainer_v0.pt``,
written by ``data/make_v0_checkpoint.py`` at commit 1461d49) loads and continues as that trainer did; the
config is stored whole and read back; a checkpoint's lambda state loads into torch.optim.Adam."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from bfdkern.bilevel import BilevelTrainer, TrainerConfig
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model

V0 = Path(__file__).parent / "data" / "trainer_v0.pt"


def _build(**kw):
    model = make_model("cnn", seed=5)  # other weights: the checkpoint must replace them
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    options = {"lambda_init": WEIGHTS, "lambda_lr": 1e-2, "parametrization": "softplus", "mode": "jvp"} | kw
    return BilevelTrainer(model, SPEC, opt, sched, **options)


def test_an_old_checkpoint_continues_as_the_old_trainer_did():
    saved = torch.load(V0, weights_only=True)
    state = torch.load(io.BytesIO(saved["state"]), weights_only=True)
    assert "tasks" not in state and set(state["config"]) == {
        "mode",
        "parametrization",
        "outer_every",
        "radius",
        "reuse_forward",
        "update_order",
    }
    trainer = _build()
    trainer.load_state_dict(state)
    assert trainer.steps == 2
    btr, bval = make_batch("cnn", 1), make_batch("cnn", 2)
    lambdas = torch.stack([trainer.step(btr, bval).lambdas for _ in range(2)])
    torch.testing.assert_close(lambdas, saved["lambdas_after"], rtol=1e-12, atol=0)
    for p, q in zip(trainer.model.parameters(), saved["params_after"]):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-13)


def test_the_config_is_stored_whole_and_read_back():
    trainer = _build(radius=0.02, outer_every=3, amp_dtype=None, check_every=4)
    state = trainer.state_dict()
    config = TrainerConfig.from_dict(state["config"])
    assert config == trainer.config
    assert config.check_every == 4 and config.batched_pair is False  # stored resolved (CPU defaults)
    assert state["tasks"] == list(SPEC.names)
    with pytest.raises(ValueError, match="softplus"):
        _build(parametrization="raw", lambda_init=WEIGHTS).load_state_dict(state)


def test_the_config_is_frozen_and_checked():
    config = TrainerConfig()
    with pytest.raises(AttributeError):
        config.mode = "jvp"
    with pytest.raises(ValueError, match="check_every"):
        TrainerConfig(check_every=0)
    with pytest.raises(ValueError, match="cuda_graph"):
        TrainerConfig(cuda_graph="sometimes")
    assert TrainerConfig.from_dict({"mode": "jvp", "amp_dtype": "bfloat16"}).amp_dtype == torch.bfloat16


def test_the_lambda_state_is_in_torch_adams_format():
    trainer = _build()
    for s in range(3):
        trainer.step(make_batch("cnn", s), make_batch("cnn", 10 + s))
    state = trainer.state_dict()
    raw = torch.nn.Parameter(state["lambda_raw"].clone())
    adam = torch.optim.Adam([raw], lr=1e-2)
    adam.load_state_dict(state["lambda_optimizer"])
    assert float(adam.state[raw]["step"]) == 3.0
    torch.testing.assert_close(adam.state[raw]["exp_avg"], trainer.weights.exp_avg)
