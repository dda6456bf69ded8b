"""The engine on a user's own problem: the NYUv2-style dense multi-task network of
``examples/dense_multitask.py`` (dict batches, dict outputs, the user's loss function), through the public
API only. The three modes agree (exact modes to 1e-10 in float64, fd at order eps^2), ``higher``'s unrolled
hypergradient (where installed) equals the exact modes, training moves lambda, and resume is exact."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from bfdkern.bilevel import BilevelTrainer, hypergradient
from examples.dense_multitask import DenseNet, SceneTasks, dense_losses, make_batch

WEIGHTS = torch.tensor([1.0, 0.6, 1.7], dtype=torch.float64)


def _setup(seed: int = 0, momentum: float = 0.9):
    torch.manual_seed(seed)
    model = DenseNet(width=6).double().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=momentum, weight_decay=0.01)
    if momentum:  # one step, so that the virtual step reads a momentum buffer too
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 0.1
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt, make_batch(6, 1, torch.float64), make_batch(6, 2, torch.float64)


def _rel(a, b) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def test_the_exact_modes_agree_to_round_off():
    model, opt, btr, bval = _setup()
    jvp = hypergradient(model, SceneTasks(), btr, bval, WEIGHTS, opt, mode="jvp")
    unroll = hypergradient(model, SceneTasks(), btr, bval, WEIGHTS, opt, mode="unroll")
    assert float(torch.linalg.vector_norm(unroll.value)) > 1e-5  # a real signal
    assert _rel(jvp.value, unroll.value) < 1e-10
    torch.testing.assert_close(jvp.outer_loss, unroll.outer_loss, rtol=1e-13, atol=0)


def test_fd_converges_to_the_exact_modes_at_second_order():
    model, opt, btr, bval = _setup()
    exact = hypergradient(model, SceneTasks(), btr, bval, WEIGHTS, opt, mode="unroll").value
    radii = [0.2, 0.1, 0.05, 0.025]
    errors = [
        _rel(hypergradient(model, SceneTasks(), btr, bval, WEIGHTS, opt, mode="fd", radius=r).value, exact)
        for r in radii
    ]
    slope = np.polyfit(np.log(radii), np.log(errors), 1)[0]
    assert 1.85 < slope < 2.15, (slope, errors)


def test_unroll_equals_higher_where_it_is_installed():
    higher = pytest.importorskip("higher")
    model, opt, btr, bval = _setup(momentum=0.0)  # higher's differentiable SGD, no momentum state
    ours = hypergradient(model, SceneTasks(), btr, bval, WEIGHTS, opt, mode="jvp").value
    lam = WEIGHTS.clone().requires_grad_(True)
    with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
        diffopt.step((lam * dense_losses(fmodel(btr["image"]), btr)).sum())
        outer = dense_losses(fmodel(bval["image"]), bval)[0]
        (theirs,) = torch.autograd.grad(outer, lam)
    assert _rel(ours, theirs) < 1e-10


def test_training_moves_lambda_and_resumes_exactly():
    def build():
        model, opt, _, _ = _setup(seed=3)
        return BilevelTrainer(model, SceneTasks(), opt, mode="jvp", lambda_init=WEIGHTS, lambda_lr=0.05)

    batches = [(make_batch(4, 10 + s, torch.float64), make_batch(4, 50 + s, torch.float64)) for s in range(4)]
    torch.manual_seed(7)
    straight = build()
    lambdas = [straight.step(*b).lambdas for b in batches]
    assert not torch.allclose(lambdas[-1], WEIGHTS, atol=0.05)  # lambda moved (0.05 a step at most)

    torch.manual_seed(7)
    first = build()
    for b in batches[:2]:
        first.step(*b)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    second = build()
    second.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    resumed = [second.step(*b).lambdas for b in batches[2:]]
    for a, b in zip(lambdas[2:], resumed):
        assert torch.equal(a, b)
    for p, q in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(p, q)


def test_the_example_runs_and_prints_the_modes_and_a_lambda_table(capsys):
    from examples import dense_multitask

    assert dense_multitask.main(["--steps", "2", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    for needle in ("fd ", "jvp ", "unroll ", "jvp vs unroll", "segmentation", "val seg loss"):
        assert needle in out, needle


def test_the_model_is_left_untouched_by_hypergradient():
    model, opt, btr, bval = _setup()
    before = copy.deepcopy(model.state_dict())
    for mode in ("fd", "jvp", "unroll"):
        hypergradient(model, SceneTasks(), btr, bval, WEIGHTS, opt, mode=mode)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
