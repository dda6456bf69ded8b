"""The pretraining run: a short run on the simulator leaves a complete run directory; a run resumed from its
checkpoint (after --max-steps or Ctrl-C) equals an uninterrupted one exactly in float64; unreadable images
are skipped and listed; run directories are never overwritten by mistake."""

import math
import os
import shutil
import signal

import numpy as np
import pytest
import torch

from bfdkern.models import load_model
from bfdkern.tasks import blades_spec
from bfdkern.training import PretrainConfig, Pretraining, load_checkpoint, pretrain, read_log

SPEC = blades_spec()
TIMING = ("step_s", "data_s")


def _config(photos, **kw):
    base = dict(
        data=str(photos),
        epochs=2,
        batch_size=16,
        image_size=16,
        backbone="small",
        feature_dim=16,
        lr=1e-3,
        lambda_lr=1e-2,
        workers=0,
        device="cpu",
        checkpoint_every=0,
        progress=False,
    )
    base.update(kw)
    return PretrainConfig(**base)


def _quiet(message):
    pass


def test_short_pretrain_on_the_simulator(photos, tmp_path):
    run = tmp_path / "run"
    result = pretrain(_config(photos, max_steps=3), run, echo=_quiet)
    assert result.status == "finished" and result.steps == 3 and result.total_steps == 6
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "checkpoint.pt", "log.csv", "chance.json", "lambda.png", "losses.png", "encoder.pt"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    log = read_log(run)
    assert log["step"].tolist() == [1, 2, 3]
    for task in SPEC.names:
        assert np.isfinite(log[f"loss_{task}"]).all() and np.isfinite(log[f"hypergrad_{task}"]).all()
    # The lr of each step follows the cosine schedule over 2 epochs x 3 steps.
    want = [1e-3 * 0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(3)]
    np.testing.assert_allclose(log["lr"], want, rtol=1e-5)
    # lambda moved, and the log holds what the trainer holds.
    np.testing.assert_allclose([log[f"lambda_{t}"][-1] for t in SPEC.names], result.lambdas, rtol=1e-6)
    assert result.lambdas != result.initial_lambdas
    model = load_model(run)
    assert model.config["backbone"] == "small" and model.features(torch.rand(2, 3, 16, 16)).shape == (2, 16)
    assert np.isfinite(result.chance).all() and len(result.first_losses) == SPEC.num_tasks
    for plot in result.plots.values():
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _interrupt_at(step):
    def on_step(record):
        if record.step == step:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does

    return on_step


@pytest.mark.parametrize("how", ["max_steps", "ctrl_c"])
def test_resume_continues_exactly(photos, tmp_path, how):
    """2 + 2 steps equal 4 steps in float64 (the second session crosses an epoch end)."""
    cfg = _config(photos, dtype="float64", max_steps=4, workers=2 if how == "ctrl_c" else 0)
    straight = pretrain(cfg, tmp_path / "straight", echo=_quiet, plots=False)

    messages = []
    if how == "max_steps":
        first = pretrain(
            _config(photos, dtype="float64", max_steps=2), tmp_path / "split", echo=messages.append, plots=False
        )
        assert first.status == "finished"
        # A session that died after logging step 3 but before its checkpoint: that row must go.
        with open(tmp_path / "split" / "log.csv", "a") as f:
            f.write("3" + ",0" * (len(read_log(tmp_path / "split")) - 2) + ",\n")
    else:
        first = pretrain(cfg, tmp_path / "split", echo=messages.append, on_step=_interrupt_at(2), plots=False)
        assert first.status == "interrupted" and first.encoder is None
        assert any("Ctrl-C" in m for m in messages)
        assert any("interrupted at step 2" in m and "--resume" in m for m in messages)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["trainer"]["steps"] == 2
    resumed = pretrain(cfg, tmp_path / "split", resume=True, echo=messages.append, plots=False)
    assert resumed.status == "finished" and resumed.steps == 4

    assert resumed.lambdas == straight.lambdas
    a, b = load_model(tmp_path / "straight"), load_model(tmp_path / "split")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    log_a, log_b = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    for column in log_a:
        if column not in TIMING:
            np.testing.assert_array_equal(log_a[column], log_b[column], err_msg=column)
    assert log_a["epoch"].tolist() == [0, 0, 0, 1]


def test_second_ctrl_c_during_a_step_keeps_the_last_checkpoint(photos, tmp_path):
    session = Pretraining(_config(photos, max_steps=4, checkpoint_every=1), tmp_path / "run", echo=_quiet)
    step = session.trainer.step

    def step_then_abort(batch_tr, batch_val):
        if session.trainer.steps == 2:
            raise KeyboardInterrupt  # arrives mid-update
        return step(batch_tr, batch_val)

    session.trainer.step = step_then_abort
    result = session.run(plots=False)
    assert result.status == "aborted" and result.encoder is None
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["trainer"]["steps"] == 2


def test_unreadable_images_are_skipped_and_listed(photos, tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    (data / "garbage.jpg").write_bytes(b"this is no JPEG")
    (data / "empty.jpg").write_bytes(b"")
    whole = (data / "cam_00000.jpg").read_bytes()
    (data / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    messages = []
    session = Pretraining(_config(data, max_steps=2), tmp_path / "run", echo=messages.append)
    (data / "cam_00001.jpg").unlink()  # unreadable after indexing: the next image is served instead
    with pytest.warns(UserWarning, match="cam_00001.jpg: missing"):
        result = session.run(plots=False)
    assert result.status == "finished" and result.steps == 2
    listed = (tmp_path / "run" / "skipped.csv").read_text()
    for name in ("garbage.jpg", "empty.jpg", "truncated.jpg"):
        assert name in listed
    assert any("24 images, 3 skipped" in m for m in messages)


def test_run_directory_rules(photos, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        pretrain(_config(photos, max_steps=1), run, resume=True, echo=_quiet)
    pretrain(_config(photos, max_steps=1), run, echo=_quiet, plots=False)
    with pytest.raises(ValueError, match="already holds a pretraining run; pass --resume"):
        pretrain(_config(photos, max_steps=1), run, echo=_quiet)
    grown = tmp_path / "grown"
    shutil.copytree(photos, grown)
    for i in range(8):
        shutil.copy(photos / "cam_00000.jpg", grown / f"extra_{i}.jpg")
    with pytest.raises(ValueError, match="the collection changed"):
        pretrain(_config(grown, max_steps=2), run, resume=True, echo=_quiet)
