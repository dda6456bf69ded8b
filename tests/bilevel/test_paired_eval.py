"""Paired evaluation: L(theta+) and L(theta-) in one vmapped forward, with the dropout masks and
batch-statistics mode of the forward at theta, leaving BatchNorm statistics and RNG untouched."""

import copy

import pytest
import torch
from torch.func import functional_call

from bfdkern.bilevel.paired_eval import paired_losses
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.precision import collapsed_fraction
from bfdkern.bilevel.rng import RngState
from bfdkern.ops import reference
from tests.bilevel.toy import SPEC, make_batch, make_model


def _pair(layout, seed, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    theta = layout.flatten()
    d = torch.randn(layout.numel, generator=g, dtype=theta.dtype) * scale
    return torch.stack([theta + d, theta - d])


def _direct_losses(model, layout, flat, x, y, state):
    """The per-task losses of a deep copy of the model at flat parameters, from RNG ``state``."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p, v in zip([dict(m.named_parameters())[n] for n in layout.names], layout.views(flat)):
            p.copy_(v)
    state.restore()
    return reference.per_task_losses(m(x), y, SPEC).detach()


@pytest.mark.parametrize("batched", [True, False])
def test_matches_two_direct_forwards_with_the_inner_forwards_masks(batched):
    model = make_model("cnn")
    layout = ParamLayout.from_model(model)
    x, y = make_batch("cnn", 1)
    pair = _pair(layout, 2)
    torch.manual_seed(5)
    state = RngState.capture("cpu")
    got = paired_losses(model, SPEC, layout, pair, (x, y), batched=batched, rng_state=state)
    assert got.shape == (2, SPEC.num_tasks)
    for i in range(2):
        want = _direct_losses(model, layout, pair[i], x, y, state)
        torch.testing.assert_close(got[i], want, rtol=1e-12, atol=1e-14)


def test_batched_and_sequential_agree():
    model = make_model("cnn")
    layout = ParamLayout.from_model(model)
    x, y = make_batch("cnn", 3)
    pair = _pair(layout, 4)
    state = RngState.capture("cpu")
    a = paired_losses(model, SPEC, layout, pair, (x, y), batched=True, rng_state=state)
    b = paired_losses(model, SPEC, layout, pair, (x, y), batched=False, rng_state=state)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batched", [True, False])
def test_both_sides_see_the_same_dropout_masks(batched):
    # Equal parameter sets: any difference between the two rows would come from the masks.
    model = make_model("cnn", dropout=0.5)
    layout = ParamLayout.from_model(model)
    x, y = make_batch("cnn", 5)
    theta = layout.flatten()
    losses = paired_losses(model, SPEC, layout, torch.stack([theta, theta.clone()]), (x, y), batched=batched)
    assert torch.equal(losses[0], losses[1])
    # ... and they are dropout masks: another random state gives other losses.
    other = paired_losses(
        model,
        SPEC,
        layout,
        torch.stack([theta, theta]),
        (x, y),
        batched=batched,
        rng_state=RngState(torch.Generator().manual_seed(99).get_state(), None, torch.device("cpu")),
    )
    assert not torch.equal(losses[0], other[0])


@pytest.mark.parametrize("batched", [True, False])
def test_leaves_running_stats_rng_and_parameters_untouched(batched):
    model = make_model("cnn")
    with torch.no_grad():
        model(make_batch("cnn", 6)[0])  # non-trivial running statistics
    layout = ParamLayout.from_model(model)
    x, y = make_batch("cnn", 7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    paired_losses(model, SPEC, layout, _pair(layout, 8), (x, y), batched=batched)
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert all(p.grad is None for p in model.parameters())


def test_batch_statistics_follow_the_model_mode():
    model = make_model("cnn")
    with torch.no_grad():
        model(make_batch("cnn", 6)[0] * 3 + 1)  # running statistics far from the batch's
    layout = ParamLayout.from_model(model)
    x, y = make_batch("cnn", 9)
    theta = layout.flatten()
    pair = torch.stack([theta, theta])
    state = RngState.capture("cpu")
    model.eval()
    eval_losses = paired_losses(model, SPEC, layout, pair, (x, y), rng_state=state)
    with torch.no_grad():
        want = reference.per_task_losses(model(x), y, SPEC)
    torch.testing.assert_close(eval_losses[0], want, rtol=1e-12, atol=1e-14)
    model.train()
    train_losses = paired_losses(model, SPEC, layout, pair, (x, y), rng_state=state)
    assert not torch.allclose(train_losses[0], eval_losses[0])
    state.restore()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    want = reference.per_task_losses(functional_call(model, buffers, (x,)), y, SPEC).detach()
    torch.testing.assert_close(train_losses[0], want, rtol=1e-12, atol=1e-14)


def test_collapsed_fraction_counts_entries_that_round_together():
    theta = torch.tensor([1.0, 1.0, 1.0, 2.0])
    step = torch.tensor([1e-6, 1e-1, 0.0, 1e-6])
    pair = torch.stack([theta + step, theta - step])
    # entries 0 and 3 move in float32 but not in bfloat16; entry 2 does not move at all.
    assert float(collapsed_fraction(pair, torch.bfloat16)) == pytest.approx(2 / 3)
    assert float(collapsed_fraction(pair, torch.float32)) == 0.0
