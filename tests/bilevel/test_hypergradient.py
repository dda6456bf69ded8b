"""The three hypergradient modes agree: jvp == unroll to rounding, fd converges to them at order
eps^2 until rounding takes over, and unroll equals an independent finite difference in lambda
of l_1 after a real optimizer step (float64, >= 3 tasks, non-uniform lambda)."""

import copy

import numpy as np
import pytest
import torch

from bfdkern.bilevel import hypergradient
from bfdkern.ops import reference
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model


def _optimizer(model, kind):
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.01)
    if kind == "momentum-groups":
        first, *rest = list(model.children())[0].children()
        rest_params = [p for m in rest for p in m.parameters()]
        opt = torch.optim.SGD(
            [{"params": first.parameters(), "lr": 0.2}, {"params": rest_params, "weight_decay": 0.0}],
            lr=0.5,
            momentum=0.9,
            nesterov=True,
            weight_decay=0.02,
        )
        for p in model.parameters():  # one step, so that momentum buffers exist
            p.grad = torch.randn_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return opt
    return torch.optim.AdamW(model.parameters(), lr=0.3, weight_decay=0.05)


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _setup(model_kind, opt_kind="sgd"):
    model = make_model(model_kind)
    opt = _optimizer(model, opt_kind)
    return model, opt, make_batch(model_kind, 1), make_batch(model_kind, 2)


@pytest.mark.parametrize("model_kind", ["mlp", "cnn"])
@pytest.mark.parametrize("opt_kind", ["sgd", "momentum-groups", "adamw"])
def test_jvp_equals_unroll_to_rounding(model_kind, opt_kind):
    model, opt, btr, bval = _setup(model_kind, opt_kind)
    jvp = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="jvp")
    unroll = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="unroll")
    assert float(torch.linalg.vector_norm(unroll.value)) > 1e-6  # a real, non-zero signal
    assert _rel(jvp.value, unroll.value) < 1e-12
    torch.testing.assert_close(jvp.v_norm, unroll.v_norm, rtol=1e-12, atol=0)
    torch.testing.assert_close(jvp.outer_loss, unroll.outer_loss, rtol=1e-13, atol=0)


@pytest.mark.parametrize("model_kind", ["mlp", "cnn"])
def test_fd_converges_at_second_order_until_rounding(model_kind):
    model, opt, btr, bval = _setup(model_kind, "momentum-groups")
    exact = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="jvp").value

    def error(r):
        return _rel(hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="fd", radius=r).value, exact)

    radii = [0.2, 0.1, 0.05, 0.025, 0.0125]
    truncation = [error(r) for r in radii]
    slope = np.polyfit(np.log(radii), np.log(truncation), 1)[0]
    assert 1.85 < slope < 2.15, (slope, truncation)
    # Far below: rounding, relative error ~ u / eps, grows as eps shrinks.
    tiny = [1e-9, 1e-11, 1e-13]
    rounding = [error(r) for r in tiny]
    slope = np.polyfit(np.log(tiny), np.log(rounding), 1)[0]
    assert -1.4 < slope < -0.6, (slope, rounding)
    assert min(rounding) > 10 * error(1e-5)


def _l1_after_real_step(model, opt, lam, btr, bval, seed):
    """l_1(B_val) after the real optimizer's step on sum lam_k l_k(B_tr), on deep copies."""
    m2, opt2 = copy.deepcopy((model, opt))
    torch.manual_seed(seed)
    per_task = reference.per_task_losses(m2(btr[0]), btr[1], SPEC)
    opt2.zero_grad(set_to_none=True)
    (lam * per_task).sum().backward()
    opt2.step()
    val = reference.per_task_losses(m2(bval[0]), bval[1], SPEC)
    return val[list(SPEC.outer_indices)].sum().detach()


@pytest.mark.parametrize("model_kind", ["mlp", "cnn"])
@pytest.mark.parametrize("opt_kind", ["sgd", "momentum-groups"])
def test_unroll_equals_a_finite_difference_in_lambda_of_a_real_step(model_kind, opt_kind):
    model, opt, btr, bval = _setup(model_kind, opt_kind)
    torch.manual_seed(11)  # the same dropout masks for both computations
    unroll = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="unroll").value
    h = 1e-4
    fd = torch.zeros_like(unroll)
    for k in range(SPEC.num_tasks):
        e = torch.zeros_like(WEIGHTS)
        e[k] = h
        plus = _l1_after_real_step(model, opt, WEIGHTS + e, btr, bval, 11)
        minus = _l1_after_real_step(model, opt, WEIGHTS - e, btr, bval, 11)
        fd[k] = (plus - minus) / (2 * h)
    assert _rel(unroll, fd) < 1e-7


@pytest.mark.parametrize("mode", ["fd", "jvp", "unroll"])
def test_leaves_model_optimizer_and_rng_untouched(mode):
    model, opt, btr, bval = _setup("cnn", "momentum-groups")
    state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    rng = torch.get_rng_state()
    hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode=mode)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())
    after = opt.state_dict()["state"]
    for k, s in opt_state["state"].items():
        assert torch.equal(after[k]["momentum_buffer"], s["momentum_buffer"])


def test_batched_and_sequential_fd_agree():
    model, opt, btr, bval = _setup("cnn")
    a = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="fd", batched=True).value
    b = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="fd", batched=False).value
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-15)
