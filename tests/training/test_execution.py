"""How a run executes: bf16 autocast with float32 master weights and the collapse warning, TF32 for the run
only, torch.compile (and why not with unroll), TensorBoard and W&B logging, and a resumed run that lengthens
its schedule."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch

from bfdkern import cli
from bfdkern.models import read_checkpoint
from bfdkern.training import PretrainConfig, pretrain, read_log
from tests.training.test_command import SMALL


def _config(photos, **kw):
    base = dict(
        data=str(photos), epochs=2, batch_size=16, image_size=16, backbone="small", feature_dim=16, lr=1e-3,
        workers=0, device="cpu", checkpoint_every=0, progress=False, max_steps=2,
    )  # fmt: skip
    return PretrainConfig(**{**base, **kw})


def test_bf16_autocasts_the_forwards_keeps_float32_weights_and_warns_of_collapse(photos, tmp_path):
    messages = []
    with pytest.warns(UserWarning, match=r"under torch\.bfloat16: theta\+ and theta- round to the same values"):
        bf16 = pretrain(_config(photos, precision="bf16"), tmp_path / "bf16", echo=messages.append, plots=False)
    assert any(m.startswith("precision bf16: forwards under bfloat16 autocast") for m in messages)
    pretrain(_config(photos), tmp_path / "fp32", echo=lambda m: None, plots=False)
    a, b = read_log(tmp_path / "bf16"), read_log(tmp_path / "fp32")
    losses = [c for c in a if c.startswith("loss_")]
    first = np.array([a[c][0] for c in losses]), np.array([b[c][0] for c in losses])
    assert not np.array_equal(*first)  # the forward ran in bfloat16 ...
    np.testing.assert_allclose(*first, rtol=0.05, atol=0.01)  # ... to bfloat16's precision
    state = read_checkpoint(tmp_path / "bf16")["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    assert bf16.status == "finished"
    with pytest.raises(ValueError, match="precision 'bf16' autocasts float32 parameters; dtype is 'float64'"):
        _config(photos, precision="bf16", dtype="float64")


def test_tf32_holds_for_the_run_only(photos, tmp_path):
    before = torch.get_float32_matmul_precision()
    seen, messages = [], []
    pretrain(
        _config(photos, tf32=True, max_steps=1),
        tmp_path / "run",
        echo=messages.append,
        on_step=lambda record: seen.append(torch.get_float32_matmul_precision()),
        plots=False,
    )
    assert seen == ["high"] and torch.get_float32_matmul_precision() == before
    assert "tf32: no effect on the CPU (TF32 tensor cores are a CUDA feature)" in messages


def test_compile_is_refused_with_unroll_and_why(photos, tmp_path, capsys):
    with pytest.raises(ValueError, match="double backward"):
        _config(photos, compile=True, mode="unroll")
    assert (
        cli.main(["pretrain", "--data", str(photos), "--out", str(tmp_path / "r"), "--compile", "--mode", "unroll"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compile cannot be used with mode 'unroll'" in err and "use mode 'jvp'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one(photos, tmp_path):
    messages = []
    pretrain(_config(photos, compile=True), tmp_path / "compiled", echo=messages.append, plots=False)
    pretrain(_config(photos), tmp_path / "eager", echo=lambda m: None, plots=False)
    assert any(m.startswith("compile: the model's forward is compiled") for m in messages)
    a, b = read_log(tmp_path / "compiled"), read_log(tmp_path / "eager")
    for column in a:
        if column.startswith(("loss_", "lambda_", "hypergrad_")):
            np.testing.assert_allclose(a[column], b[column], rtol=1e-4, atol=1e-6, err_msg=column)
    # The encoder file has the plain module's parameter names (no torch.compile wrapper prefix).
    names = read_checkpoint(tmp_path / "compiled")["state_dict"]
    assert names.keys() == read_checkpoint(tmp_path / "eager")["state_dict"].keys()


def test_resume_may_lengthen_the_schedule_and_says_so(photos, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["pretrain", "--data", str(photos), "--out", str(run), *SMALL]  # 2 epochs of 3 steps
    assert cli.main(argv) == 0
    assert "step 6 of 6" in capsys.readouterr().out
    assert cli.main(["pretrain", "--out", str(run), "--resume", "--epochs", "1"]) == 2
    assert "epochs 1 (the run has 2; a resumed run may lengthen it, not shorten it)" in capsys.readouterr().err
    assert cli.main(["pretrain", "--out", str(run), "--resume", "--epochs", "4", "--max-steps", "10"]) == 0
    out = capsys.readouterr().out
    assert (
        "schedule lengthened: the cosine schedule now spans 12 steps (4 epochs of 3), was 6; lr at step 6 is now 0.0005"
        in out
    )
    assert "step 10 of 12" in out
    log = read_log(run)
    assert log["step"].tolist() == list(range(1, 11))
    # Steps 7.. follow the 12-step cosine, as if the run had been planned with 4 epochs.
    want = [1e-3 * 0.5 * (1 + math.cos(math.pi * (t - 1) / 12)) for t in range(7, 11)]
    np.testing.assert_allclose(log["lr"][6:], want, rtol=1e-5)
    assert PretrainConfig.load(run).epochs == 4


def test_tensorboard_logger_writes_the_scalars_and_purges_on_resume(photos, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    pretrain(_config(photos, logger="tensorboard", max_steps=3), run, echo=lambda m: None, plots=False)
    # What a session killed after logging step 4, before its checkpoint, leaves behind.
    with SummaryWriter(str(run / "tensorboard")) as dead:
        dead.add_scalar("lambda/manipulated", -99.0, 4)
    pretrain(_config(photos, logger="tensorboard", max_steps=5), run, resume=True, echo=lambda m: None, plots=False)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/iso", "lambda/manipulated", "hypergrad/region", "outer_loss", "lr"} <= tags
    assert [e.step for e in events.Scalars("loss/iso")] == [1, 2, 3, 4, 5]
    lam = [(e.step, e.value) for e in events.Scalars("lambda/manipulated")]
    assert [step for step, _ in lam] == [1, 2, 3, 4, 5]  # the dead session's step 4 was purged
    np.testing.assert_allclose([v for _, v in lam], read_log(run)["lambda_manipulated"], rtol=1e-6)


def test_csv_logger_writes_no_tensorboard_files(photos, tmp_path):
    pretrain(_config(photos, max_steps=1), tmp_path / "run", echo=lambda m: None, plots=False)
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_wandb_logger_sends_the_scalars_to_one_run_across_resumes(photos, tmp_path, monkeypatch):
    """W&B itself is not installed here (nor is the network reachable): a stand-in module records the calls
    that bfdkern makes on the wandb API (init, log, finish)."""
    calls = []

    class Run:
        def log(self, scalars, step):
            calls.append(("log", step, dict(scalars)))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    fake = types.SimpleNamespace(init=init, util=types.SimpleNamespace(generate_id=lambda: "abc123"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = tmp_path / "run"
    pretrain(_config(photos, logger="wandb", max_steps=2), run, echo=lambda m: None, plots=False)
    pretrain(_config(photos, logger="wandb", max_steps=3), run, resume=True, echo=lambda m: None, plots=False)
    inits = [c[1] for c in calls if c[0] == "init"]
    assert [(i["id"], i["resume"], i["name"]) for i in inits] == [("abc123", "allow", "run")] * 2
    assert inits[0]["config"]["batch_size"] == 16 and inits[0]["config"]["logger"] == "wandb"
    logged = [c for c in calls if c[0] == "log"]
    assert [c[1] for c in logged] == [1, 2, 3]
    assert {"loss/iso", "lambda/manipulated", "lr", "outer_loss"} <= set(logged[0][2])
    assert [c[0] for c in calls].count("finish") == 2
    assert (run / "wandb-id.txt").read_text() == "abc123\n"


def test_wandb_logger_without_wandb_is_one_clear_line(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError, installed or not
    run = tmp_path / "run"
    assert cli.main(["pretrain", "--data", str(photos), "--out", str(run), *SMALL, "--logger", "wandb"]) == 2
    assert capsys.readouterr().err == (
        "bfdkern pretrain: error: logger 'wandb' needs the wandb package (pip install wandb, then wandb login); "
        "or use logger 'tensorboard' or 'csv'\n"
    )
    assert not run.exists()
