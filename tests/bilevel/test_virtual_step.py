"""The virtual step is the step the real optimizer would take (SGD: momentum buffers included),
read from its param groups at call time."""

import copy

import pytest
import torch

from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.virtual_step import VirtualStep
from tests.bilevel.toy import make_model


def _random_grads(model, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]


def _real_step(model, optimizer, grads):
    """theta after optimizer.step() with these gradients, on copies."""
    m2 = copy.deepcopy(model)
    opt2 = type(optimizer)(m2.parameters(), **optimizer.defaults)
    opt2.load_state_dict(optimizer.state_dict())
    for p, g in zip(m2.parameters(), grads):
        p.grad = g.clone()
    opt2.step()
    return ParamLayout.from_model(m2).flatten()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.1, weight_decay=0.0),
        dict(lr=0.05, weight_decay=0.01, momentum=0.9),
        dict(lr=0.05, weight_decay=0.01, momentum=0.9, dampening=0.3),
        dict(lr=0.05, weight_decay=0.01, momentum=0.8, nesterov=True),
    ],
)
def test_matches_a_real_sgd_step_before_and_after_momentum_buffers_exist(kwargs):
    model = make_model("mlp")
    opt = torch.optim.SGD(model.parameters(), **kwargs)
    layout = ParamLayout.from_model(model, opt)
    for seed in (1, 2):  # first step: no buffer yet; second: buffer from the first
        grads = _random_grads(model, seed)
        rule = VirtualStep.from_optimizer(opt, layout)
        virtual = rule.apply(layout.flatten(), grads, layout)
        torch.testing.assert_close(virtual, _real_step(model, opt, grads), rtol=1e-14, atol=1e-14)
        differentiable = rule.apply_differentiable(layout.params, grads)
        torch.testing.assert_close(layout.flatten(differentiable), virtual, rtol=1e-14, atol=1e-14)
        # advance the real optimizer so the next round has momentum buffers
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        opt.step()


def test_adamw_gives_a_plain_sgd_virtual_step_with_current_lr_and_group_decay():
    model = make_model("mlp")
    first, second = model.net[0], model.net[2]
    opt = torch.optim.AdamW(
        [{"params": first.parameters(), "lr": 1e-2, "weight_decay": 0.1}, {"params": second.parameters()}],
        lr=3e-2,
        weight_decay=0.0,
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()  # lr halves: the virtual step must read the current lr
    layout = ParamLayout.from_model(model, opt)
    grads = _random_grads(model, 3)
    rule = VirtualStep.from_optimizer(opt, layout)
    virtual = layout.views(rule.apply(layout.flatten(), grads, layout))
    lrs = [5e-3, 5e-3, 1.5e-2, 1.5e-2]
    wds = [0.1, 0.1, 0.0, 0.0]
    for v, p, g, lr, wd in zip(virtual, model.parameters(), grads, lrs, wds):
        torch.testing.assert_close(v, p.detach() - lr * (g + wd * p.detach()), rtol=1e-14, atol=1e-14)
    assert not rule.uniform and rule.scale == pytest.approx(1.5e-2)


def test_direction_rescales_per_group_so_that_scale_times_direction_is_the_step():
    model = make_model("mlp")
    opt = torch.optim.SGD(
        [{"params": model.net[0].parameters(), "lr": 0.02}, {"params": model.net[2].parameters(), "lr": 0.08}]
    )
    layout = ParamLayout.from_model(model, opt)
    rule = VirtualStep.from_optimizer(opt, layout)
    v = torch.randn(layout.numel, dtype=torch.float64)
    w = rule.direction(v, layout)
    for wi, vi, lr in zip(layout.views(w), layout.views(v), [0.02, 0.02, 0.08, 0.08]):
        torch.testing.assert_close(rule.scale * wi, lr * vi)


def test_maximize_is_rejected():
    model = make_model("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, maximize=True)
    with pytest.raises(ValueError, match="maximize"):
        VirtualStep.from_optimizer(opt, ParamLayout.from_model(model, opt))


def test_in_place_step_copes_with_shared_and_expanded_gradients():
    a = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    c = torch.nn.Parameter(torch.randn(2, 2, dtype=torch.float64))
    model = torch.nn.ParameterList([a, b, c])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.2)
    layout = ParamLayout.from_model(model, opt)
    rule = VirtualStep.from_optimizer(opt, layout)
    # The gradient of a + b is one tensor for both; that of c.sum() is expanded (stride 0).
    ga, gb = torch.autograd.grad((a + b).pow(2).sum(), [a, b])
    assert ga.data_ptr() == gb.data_ptr()
    (gc,) = torch.autograd.grad(c.sum(), [c])
    assert gc.stride() == (0, 0)
    want = rule.apply(layout.flatten(), [ga.clone(), gb.clone(), gc.clone()], layout)
    got = rule.apply_([ga, gb, gc], layout.params)
    torch.testing.assert_close(layout.flatten(got), want, rtol=1e-15, atol=1e-15)
