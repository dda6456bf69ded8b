"""BilevelTrainer: the step does what the paper's steps 1-5 say (checked against hand-built
copies), resumes exactly, and turns bad input into clear errors or skipped outer updates."""

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import bfdkern
from bfdkern.bilevel import BilevelTrainer, hypergradient
from bfdkern.ops import reference
from bfdkern.tasks import Task, TaskSpec
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model

LAMBDA_LR = 1e-2


def _first_adam_step(grad, lr):
    """The change Adam's first step makes: -lr g / (|g| + 1e-8)."""
    return -lr * grad / (grad.abs() + 1e-8)


def _trainer(model, **kw):
    opt = kw.pop("optimizer", None) or torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    kw.setdefault("lambda_init", WEIGHTS)
    kw.setdefault("lambda_lr", LAMBDA_LR)
    return BilevelTrainer(model, SPEC, opt, **kw)


def _plain_update(model, optimizer, lam, batch, seed=None):
    """Deep copies of model and optimizer after one real step on sum lam_k l_k(batch)."""
    m2, opt2 = copy.deepcopy((model, optimizer))
    if seed is not None:
        torch.manual_seed(seed)
    opt2.zero_grad(set_to_none=True)
    (lam * reference.per_task_losses(m2(batch[0]), batch[1], SPEC)).sum().backward()
    opt2.step()
    return m2


def test_public_name():
    assert bfdkern.BilevelTrainer is BilevelTrainer


@pytest.mark.parametrize("mode", ["fd", "jvp", "unroll"])
def test_step_updates_lambda_by_adam_on_the_hypergradient_then_theta_with_the_new_lambda(mode):
    model = make_model("cnn")
    trainer = _trainer(model, mode=mode)
    btr, bval = make_batch("cnn", 1), make_batch("cnn", 2)
    torch.manual_seed(3)
    expected = hypergradient(model, SPEC, btr, bval, WEIGHTS, trainer.optimizer, mode=mode)
    record = trainer.step(btr, bval)  # same random state: hypergradient() left it untouched
    torch.testing.assert_close(record.hypergrad, expected.value, rtol=1e-10, atol=1e-16)
    torch.testing.assert_close(record.per_task, expected.per_task, rtol=1e-12, atol=0)
    assert float(record.eps) == pytest.approx(float(expected.eps), rel=1e-10)
    torch.testing.assert_close(
        record.lambdas, WEIGHTS + _first_adam_step(expected.value, LAMBDA_LR), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(trainer.lambdas, record.lambdas)
    assert record.step == 1 and record.skipped is None
    assert set(record.timings) == {"inner", "outer", "lambda", "update", "total"}


@pytest.mark.parametrize(
    ("update_order", "dtype"), [("paper", torch.float64), ("lagged", torch.float64), ("paper", torch.bfloat16)]
)
def test_fd_workspace_is_reused_and_changes_nothing(update_order, dtype):
    """The fd trainer writes theta+- into one kept [2, N] buffer in the master dtype (float32 for
    bfloat16 parameters); three steps give bitwise the same lambdas and parameters as a trainer that
    takes a fresh output every step."""
    runs = []
    for keep in (True, False):
        model = make_model("cnn").to(dtype)
        trainer = _trainer(model, mode="fd", update_order=update_order)
        if not keep:
            trainer.workspace.pair_buffer = lambda: None
        torch.manual_seed(5)
        for step in range(3):
            (x_tr, y_tr), (x_val, y_val) = make_batch("cnn", 10 + step), make_batch("cnn", 20 + step)
            trainer.step((x_tr.to(dtype), y_tr), (x_val.to(dtype), y_val))
            if keep:
                pair = trainer.workspace.pair
                bound = "g" if update_order == "lagged" else "update gradient"
                assert trainer.workspace.holds == (bound if dtype == torch.float64 else "nothing")  # bf16: none
                if step == 0:
                    first = pair.data_ptr()
                assert pair.shape == (2, trainer.layout.numel)
                assert pair.dtype == trainer.layout.master_dtype
                assert pair.data_ptr() == first
        runs.append((trainer.lambdas.clone(), [p.detach().clone() for p in model.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("reuse_forward", [True, False])
@pytest.mark.parametrize("mode", ["fd", "unroll"])
def test_paper_order_real_update_uses_the_new_lambda(reuse_forward, mode):
    model = make_model("mlp")
    # SGD: Adam's first step g / (|g| + 1e-8) would amplify rounding of tiny gradients.
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01, momentum=0.9)
    trainer = _trainer(model, optimizer=opt, mode=mode, reuse_forward=reuse_forward)
    btr, bval = make_batch("mlp", 1), make_batch("mlp", 2)
    before_model, before_opt = copy.deepcopy((model, trainer.optimizer))
    record = trainer.step(btr, bval)
    want = _plain_update(before_model, before_opt, record.lambdas, btr)
    for p, q in zip(model.parameters(), want.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15)


def test_lagged_order_real_update_uses_the_old_lambda():
    model = make_model("cnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01, momentum=0.9)
    trainer = _trainer(model, optimizer=opt, update_order="lagged")
    btr, bval = make_batch("cnn", 1), make_batch("cnn", 2)
    before_model, before_opt = copy.deepcopy((model, trainer.optimizer))
    torch.manual_seed(4)
    record = trainer.step(btr, bval)
    assert not torch.allclose(record.lambdas, WEIGHTS)
    want = _plain_update(before_model, before_opt, WEIGHTS, btr, seed=4)  # same dropout masks
    for p, q in zip(model.parameters(), want.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15)
    for b, c in zip(model.buffers(), want.buffers()):  # running statistics updated once
        torch.testing.assert_close(b, c, rtol=1e-12, atol=1e-15)


def test_outer_update_every_k_steps():
    model = make_model("mlp")
    trainer = _trainer(model, outer_every=2)
    btr, bval = make_batch("mlp", 1), make_batch("mlp", 2)
    records = [trainer.step(btr, bval) for _ in range(4)]
    assert [r.hypergrad is not None for r in records] == [True, False, True, False]
    assert torch.equal(records[1].lambdas, records[0].lambdas)
    assert not torch.equal(records[2].lambdas, records[1].lambdas)
    # A plain step needs no validation labels at all.
    trainer.steps = 1
    x, y = bval
    trainer.step(btr, (x, torch.full_like(y, float("nan"))))


def test_outer_every_zero_keeps_lambda_fixed_with_plain_steps():
    model = make_model("mlp")
    trainer = _trainer(model, outer_every=0)
    btr, bval = make_batch("mlp", 1), make_batch("mlp", 2)
    before = trainer.layout.flatten().clone()
    records = [trainer.step(btr, bval) for _ in range(3)]
    assert all(r.hypergrad is None for r in records)
    assert all(torch.equal(r.lambdas, WEIGHTS) for r in records)
    assert not torch.equal(trainer.layout.flatten(), before)  # theta still trains


@pytest.mark.parametrize("mode", ["fd", "unroll"])
@pytest.mark.parametrize("update_order", ["paper", "lagged"])
def test_no_gradient_leaks_into_the_next_step(mode, update_order):
    # The trainer keeps .grad in one persistent buffer that holds g and theta' during a step.
    model = make_model("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = _trainer(model, optimizer=opt, mode=mode, update_order=update_order, outer_every=2)
    btr, bval = make_batch("mlp", 1), make_batch("mlp", 2)
    trainer.step(btr, bval)
    before_model, before_opt = copy.deepcopy((model, opt))
    btr2 = make_batch("mlp", 3)
    trainer.step(btr2, bval)  # a plain step
    want = _plain_update(before_model, before_opt, trainer.lambdas, btr2)
    for p, q in zip(model.parameters(), want.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("parametrization", ["raw", "softplus", "softmax"])
def test_parametrisations(parametrization):
    model = make_model("mlp")
    init = WEIGHTS * (SPEC.num_tasks / WEIGHTS.sum()) if parametrization == "softmax" else WEIGHTS
    trainer = _trainer(model, parametrization=parametrization, lambda_init=init, lambda_lr=0.5)
    torch.testing.assert_close(trainer.lambdas, init, rtol=1e-12, atol=0)
    btr, bval = make_batch("mlp", 1), make_batch("mlp", 2)
    raw_before = trainer.weights.raw.detach().clone()
    record = trainer.step(btr, bval)
    lam = trainer.lambdas
    assert torch.isfinite(lam).all() and not torch.allclose(lam, init)
    if parametrization == "softmax":
        torch.testing.assert_close(lam.sum(), torch.tensor(float(SPEC.num_tasks), dtype=lam.dtype))
    else:
        # d lambda / d raw = 1 (raw) or sigmoid(raw) (softplus): the chain rule into Adam's first step.
        dlam = torch.ones_like(raw_before) if parametrization == "raw" else torch.sigmoid(raw_before)
        want = raw_before + _first_adam_step(record.hypergrad * dlam, 0.5)
        torch.testing.assert_close(trainer.weights.raw.detach(), want, rtol=1e-12, atol=0)
    if parametrization == "softplus":
        assert (lam > 0).all()


def test_resume_continues_exactly():
    btr, bval = make_batch("cnn", 1), make_batch("cnn", 2)

    def build(seed):
        model = make_model("cnn", seed=seed)
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        return BilevelTrainer(model, SPEC, opt, sched, lambda_init=WEIGHTS, lambda_lr=LAMBDA_LR)

    torch.manual_seed(21)
    straight = build(0)
    lam_straight = [straight.step(btr, bval).lambdas for _ in range(4)]

    torch.manual_seed(21)
    first = build(0)
    lam_resumed = [first.step(btr, bval).lambdas for _ in range(2)]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    torch.manual_seed(999)  # the resumed run must not depend on the state at load time
    second = build(seed=7)
    second.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    lam_resumed += [second.step(btr, bval).lambdas for _ in range(2)]

    for a, b in zip(lam_straight, lam_resumed):
        assert torch.equal(a, b)
    assert second.steps == 4
    for (n, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), n
    assert straight.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]


def test_gradient_clipping_bounds_the_real_update():
    model = make_model("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = _trainer(model, optimizer=opt, clip_grad_norm=1e-3)
    before = trainer.layout.flatten()
    trainer.step(make_batch("mlp", 1), make_batch("mlp", 2))
    moved = torch.linalg.vector_norm(trainer.layout.flatten() - before)
    assert float(moved) == pytest.approx(1e-3, rel=1e-4)  # clip_grad_norm_ divides by norm + 1e-6


def test_check_hypergrad_reports_three_agreeing_estimates():
    model = make_model("cnn")
    trainer = _trainer(model)
    state = copy.deepcopy(model.state_dict())
    check = trainer.check_hypergrad(make_batch("cnn", 1), make_batch("cnn", 2))
    assert check.relative_errors["jvp"] < 1e-12
    assert 0 < check.relative_errors["fd"] < 1e-3
    assert check.fd.shape == check.jvp.shape == check.unroll.shape == (SPEC.num_tasks,)
    assert "relative errors" in str(check)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


# --- bad input ---------------------------------------------------------------------------------
class _Truncated(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)[:, :-1]


class _NoOuterSignal(nn.Module):
    """The outer task's logits do not depend on the parameters: v = 0."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        mask = torch.zeros(SPEC.num_columns, dtype=torch.bool)
        for k in SPEC.outer_indices:
            mask[SPEC.columns(k)] = True
        self.register_buffer("mask", mask)

    def forward(self, x):
        z = self.inner(x)
        return torch.where(self.mask, torch.zeros_like(z), z)


def test_model_output_not_matching_the_spec():
    trainer = _trainer(_Truncated(make_model("mlp")))
    with pytest.raises(ValueError, match=r"returned shape \(8, 7\) but the task spec needs packed logits \[B=8, C=8\]"):
        trainer.step(make_batch("mlp", 1), make_batch("mlp", 2))


def test_validation_batch_without_outer_labels():
    """Found on the device: lambda is not updated, and the flag read after the step raises naming it."""
    trainer = _trainer(make_model("mlp"))
    x, y = make_batch("mlp", 2)
    y[:, SPEC.target_columns("fake")] = float("nan")
    with pytest.raises(ValueError, match=r"^step 1: validation batch has no label for the outer task\(s\) \['fake'\]"):
        trainer.step(make_batch("mlp", 1), (x, y))
    assert torch.equal(trainer.lambdas, WEIGHTS)
    with pytest.raises(ValueError, match="step 1: validation batch has no label"):  # the run has stopped
        trainer.step(make_batch("mlp", 1), make_batch("mlp", 2))


def test_invalid_labels_are_masked_and_reported_by_task_at_the_next_read():
    trainer = _trainer(make_model("mlp"), check_every=2)
    x, y = make_batch("mlp", 1)
    y[0, SPEC.target_columns("kind")] = 7.0  # 3 classes
    record = trainer.step((x, y), make_batch("mlp", 2))  # no read yet: step 1 of 2
    assert torch.isfinite(record.per_task).all()  # the bad label was masked, never read by a kernel
    with pytest.raises(
        ValueError, match=r"^step 1: training batch: task 'kind' \(categorical\): labels must be integer"
    ):
        trainer.step(make_batch("mlp", 3), make_batch("mlp", 2))


def test_spec_without_outer_task_and_bad_options():
    spec = TaskSpec((Task("a", "ordinal", 1), Task("b", "binary", 2)))
    with pytest.raises(ValueError, match="no outer task"):
        BilevelTrainer(nn.Linear(3, 3), spec)
    for kw, msg in [
        ({"mode": "exact"}, "mode must be one of"),
        ({"update_order": "late"}, "update_order"),
        ({"parametrization": "exp"}, "parametrization"),
        ({"amp_dtype": torch.float16}, "gradient scaling"),
        ({"lambda_init": [1.0, 2.0]}, r"lambda_init must be a float or \[K=4\]"),
        ({"parametrization": "softplus", "lambda_init": 0.0}, "lambda_init > 0"),
        ({"outer_every": -1}, "outer_every"),
    ]:
        with pytest.raises(ValueError, match=msg):
            _trainer(make_model("mlp"), **kw)
    with pytest.raises(ValueError, match=r"\(inputs, targets\) pair"):
        _trainer(make_model("mlp")).step(make_batch("mlp", 1)[0], make_batch("mlp", 2))


@pytest.mark.parametrize("check_every", [1, 3])
def test_nan_training_loss_stops_the_run_at_the_next_read_naming_the_step_and_task(check_every):
    trainer = _trainer(make_model("mlp"), check_every=check_every)
    trainer.step(make_batch("mlp", 1), make_batch("mlp", 2))
    x, y = make_batch("mlp", 3)
    x[0, 0] = float("nan")
    message = r"^step 2: the training loss is not finite for task\(s\) \['rank', 'kind', 'fake', 'region'\]"
    with pytest.raises(FloatingPointError, match=message):
        trainer.step((x, y), make_batch("mlp", 2))
        trainer.step(make_batch("mlp", 4), make_batch("mlp", 2))  # step 3: the read when check_every = 3
    assert trainer.steps == (2 if check_every == 1 else 3)
    with pytest.raises(FloatingPointError, match=message):  # the run has stopped: no checkpoint either
        trainer.state_dict()
    with pytest.raises(FloatingPointError, match=message):
        trainer.step(make_batch("mlp", 1), make_batch("mlp", 2))


@pytest.mark.parametrize("mode", ["fd", "jvp", "unroll"])
def test_zero_validation_gradient_skips_the_outer_update_with_a_warning(mode):
    trainer = _trainer(_NoOuterSignal(make_model("mlp")), mode=mode)
    before = trainer.layout.flatten()
    with pytest.warns(UserWarning, match=r"^step 1: outer update skipped, lambda unchanged: .*\|\|v\|\| = 0") as seen:
        record = trainer.step(make_batch("mlp", 1), make_batch("mlp", 2))
    assert len(seen) == 1  # the first reason only
    assert "||v|| = 0" in record.skipped
    assert torch.equal(trainer.lambdas, WEIGHTS)
    assert not torch.equal(trainer.layout.flatten(), before)  # the real update still happened


def test_nan_validation_loss_skips_the_outer_update():
    trainer = _trainer(make_model("mlp"))
    x, y = make_batch("mlp", 2)
    x[1, 2] = float("inf")
    with pytest.warns(UserWarning, match="outer update skipped.*not finite"):
        trainer.step(make_batch("mlp", 1), (x, y))
    assert torch.equal(trainer.lambdas, WEIGHTS)


def test_bfloat16_collapse_warns_and_points_to_jvp():
    model = make_model("mlp").float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    btr = tuple(t.float() for t in make_batch("mlp", 1))
    bval = tuple(t.float() for t in make_batch("mlp", 2))
    trainer = BilevelTrainer(model, SPEC, opt, amp_dtype=torch.bfloat16, radius=1e-4)
    with pytest.warns(UserWarning, match=r"round to the same values .* mode='jvp'"):
        trainer.step(btr, bval)
    exact = BilevelTrainer(make_model("mlp").float(), SPEC, amp_dtype=torch.bfloat16, mode="jvp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record = exact.step(btr, bval)
    assert torch.isfinite(record.hypergrad).all()
