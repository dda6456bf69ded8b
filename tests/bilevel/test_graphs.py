"""CUDA-graph capture of a whole step: on the CPU, the refusals and their reasons (and ``"auto"`` running
eagerly instead); on a GPU, 20 captured steps equal 20 eager ones (lambda and theta to round-off)."""

from __future__ import annotations

import contextlib
import copy
import warnings

import pytest
import torch

from bfdkern.bilevel import BilevelTrainer
from bfdkern.bilevel.graphs import batch_signature, capture_refusals, describe
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model


def test_a_cpu_model_is_refused_with_the_reason():
    with pytest.raises(
        ValueError, match=r"cuda_graph=True cannot capture .*the model is on cpu: CUDA graphs need a CUDA"
    ):
        BilevelTrainer(make_model("mlp"), SPEC, cuda_graph=True)


def test_every_reason_is_named():
    model = make_model("cnn", dropout=0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)  # not capturable
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    trainer = BilevelTrainer(model, SPEC, opt, sched, mode="unroll")
    reasons = " | ".join(capture_refusals(trainer))
    for needle in (
        "the model is on cpu",
        "mode='unroll' builds a new double-backward graph",
        "AdamW keeps its step count on the host; build it with capturable=True",
        "an lr scheduler changes the learning rate",
        "dropout is active in ['net.3']",
    ):
        assert needle in reasons, needle
    rmsprop = make_model("mlp")
    trainer = BilevelTrainer(rmsprop, SPEC, torch.optim.RMSprop(rmsprop.parameters(), lr=0.01), mode="jvp")
    assert "RMSprop cannot be captured" in " | ".join(capture_refusals(trainer))


def test_auto_runs_eagerly_with_a_warning_where_capture_cannot_work():
    model = make_model("mlp")
    reference = copy.deepcopy(model)
    with pytest.warns(UserWarning, match="cuda_graph='auto': steps run eagerly: the model is on cpu"):
        auto = BilevelTrainer(model, SPEC, lambda_init=WEIGHTS, cuda_graph="auto")
    plain = BilevelTrainer(reference, SPEC, lambda_init=WEIGHTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seed in range(3):
            batches = make_batch("mlp", seed), make_batch("mlp", 10 + seed)
            assert torch.equal(auto.step(*batches).lambdas, plain.step(*batches).lambdas)


def test_the_batch_signature_sees_shapes_dtypes_and_structure():
    a = (make_batch("mlp", 1, batch=8), make_batch("mlp", 2, batch=8))
    b = (make_batch("mlp", 1, batch=6), make_batch("mlp", 2, batch=8))
    assert batch_signature(a) == batch_signature(tuple((x.clone(), y.clone()) for x, y in a))
    assert batch_signature(a) != batch_signature(b)
    assert batch_signature(a) != batch_signature(({"x": a[0][0], "y": a[0][1]}, a[1]))
    assert describe(batch_signature(b)).startswith("[6, 6], [6, 5], [8, 6]")


@pytest.mark.cuda
@pytest.mark.parametrize(
    "options",
    [{"mode": "fd"}, {"mode": "fd", "update_order": "lagged"}, {"mode": "jvp"}, {"mode": "fd", "outer_every": 2}],
    ids=["fd", "fd_lagged", "jvp", "fd_outer_every_2"],
)
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_captured_steps_equal_eager_steps(options, optimizer):
    """20 steps (3 warm-up steps of each kind eagerly, then replays) against 20 eager steps, float32."""
    runs = {}
    for graph in (False, True):
        model = make_model("cnn", dropout=0.0).float().cuda()
        if optimizer == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01, capturable=True)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=0.01)
        trainer = BilevelTrainer(
            model, SPEC, opt, lambda_init=WEIGHTS.float(), lambda_lr=1e-2, cuda_graph=graph, **options
        )
        lambdas = []
        for step in range(20):
            (x, y), (xv, yv) = make_batch("cnn", step), make_batch("cnn", 100 + step)
            record = trainer.step((x.float(), y.float()), (xv.float(), yv.float()))
            lambdas.append(record.lambdas.cpu())
        if graph:
            assert trainer.graphs.captured, "no step was captured"
        runs[graph] = (torch.stack(lambdas), trainer.layout.theta().cpu())
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(runs[True][1], runs[False][1], rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_a_changed_batch_shape_is_refused_or_run_eagerly():
    for choice in (True, "auto"):
        model = make_model("mlp").float().cuda()
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        trainer = BilevelTrainer(model, SPEC, opt, lambda_init=WEIGHTS.float(), cuda_graph=choice)
        for step in range(5):
            trainer.step(*(tuple(t.float() for t in make_batch("mlp", step + i)) for i in (0, 50)))
        smaller = tuple(tuple(t.float() for t in make_batch("mlp", 9 + i, batch=5)) for i in (0, 50))
        if choice is True:
            with pytest.raises(ValueError, match="the batch shapes changed"):
                trainer.step(*smaller)
        else:
            with pytest.warns(UserWarning, match="the batch shapes changed"):
                trainer.step(*smaller)


class _FakeStream:
    def wait_stream(self, other):
        pass


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on the CPU: recording runs the step (a real capture does not), so
    the first replay after it does nothing and later replays run the recorded step again, writing its
    outputs into the recorded ones as a graph's replay overwrites its output buffers."""

    captures = 0

    def __init__(self):
        type(self).captures += 1
        self.fresh = True


def _fake_replay(captured):
    if captured.graph.fresh:
        captured.graph.fresh = False
        return
    new = captured.body()
    for name in ("per_task", "lambdas", "hypergrad", "eps", "outer_loss", "problems"):
        static = getattr(captured.record, name)
        if static is not None:
            static.copy_(getattr(new, name))


@pytest.fixture
def fake_cuda_graphs(monkeypatch):
    """The capture plumbing on the CPU: streams, synchronisation and graphs replaced by stand-ins."""
    from bfdkern.bilevel import graphs

    monkeypatch.setattr(graphs, "capture_refusals", lambda trainer: [])
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: _FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: _FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", lambda g, **options: contextlib.nullcontext())
    monkeypatch.setattr(graphs.CapturedSteps, "_replay", staticmethod(_fake_replay))
    _FakeGraph.captures = 0
    return _FakeGraph


@pytest.mark.parametrize("outer_every", [1, 2])
def test_the_capture_plumbing_takes_the_eager_steps(fake_cuda_graphs, outer_every):
    """Warm-up, static input buffers, replays, copied-out records, step numbers, one graph per kind of step,
    and a new capture when the optimizer's settings change: the same lambdas and theta as eager steps."""
    runs = {}
    for graph in (False, True):
        model = make_model("mlp")
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        trainer = BilevelTrainer(
            model, SPEC, opt, lambda_init=WEIGHTS, lambda_lr=1e-2, outer_every=outer_every, cuda_graph=graph
        )
        records = []
        for step in range(12):
            if step == 9:
                opt.param_groups[0]["lr"] = 0.02  # a captured step holds the lr: captured again
            records.append(trainer.step(make_batch("mlp", step), make_batch("mlp", 100 + step)))
        runs[graph] = (records, trainer)
    (eager, _), (replayed, trainer) = runs[False], runs[True]
    assert [r.step for r in replayed] == list(range(1, 13))
    for a, b in zip(eager, replayed):
        assert torch.equal(a.lambdas, b.lambdas) and torch.equal(a.per_task, b.per_task)
    assert replayed[-1].lambdas is not replayed[-2].lambdas  # copies, not the graph's buffers
    assert torch.equal(runs[False][1].layout.theta(), trainer.layout.theta())
    kinds = 1 if outer_every == 1 else 2
    assert fake_cuda_graphs.captures == 2 * kinds  # once per kind, again after the lr change


def test_a_loaded_checkpoint_is_captured_anew(fake_cuda_graphs):
    """load_state_dict gives the optimizer new state tensors, which a recorded graph would not see."""
    model = make_model("mlp")
    trainer = BilevelTrainer(model, SPEC, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), cuda_graph=True)
    for step in range(5):
        trainer.step(make_batch("mlp", step), make_batch("mlp", 100 + step))
    assert trainer.graphs.captured
    trainer.load_state_dict(trainer.state_dict())
    assert not trainer.graphs.captured and trainer.graphs.warmed == {True: 0, False: 0}
