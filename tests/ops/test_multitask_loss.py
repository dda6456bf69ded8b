"""bfdkern.multitask_loss on every backend against the float64 reference, on fresh random inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import bfdkern
from bfdkern.ops import BACKENDS, BackendUnavailable, dispatch, reference
from bfdkern.tasks import Task, TaskSpec, blades_spec
from tests.helpers import ROOT, random_inputs
from tests.ops.backends import backend_params, interpreted, require

# A loss term such as 1 - sqrt(p) is O(1) before it cancels, so a loss carries an absolute error of
# a few units of the compute dtype's epsilon however small it is; a gradient entry is compared to a
# fraction of the largest entry (sums of many pair terms cancel). Half gradients are stored in
# their half dtype.
LOSS_TOL = {torch.float64: (1e-11, 1e-13), torch.float32: (1e-5, 1e-6)}  # (rtol, atol)
GRAD_TOL = {torch.float64: 1e-10, torch.float32: 5e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def levels_spec() -> TaskSpec:
    """The BLADES spec plus an L-level ordinal head and a focal multilabel head, non-default sigma."""
    extra = (Task("stage", "ordinal", 4), Task("tags", "multilabel", 3, gamma=1.5))
    return TaskSpec(blades_spec().tasks + extra, sigma=0.7, delta=1e-6)


def small_spec() -> TaskSpec:
    """One task of each kind (L-level ordinal and focal heads included), for the numerical checks."""
    return levels_spec().subset(["iso", "white_balance", "manipulated", "region", "stage", "tags"])


@pytest.fixture(params=backend_params())
def target(request):
    """(backend, device) that can serve, else skipped with the reason."""
    backend, device = request.param
    return backend, require(backend, device, "multitask_loss")


def reference_loss(spec, logits, targets, weights, upstream, total_grad):
    """float64 reference: per_task, total and d(upstream . per_task + total_grad * total)/d logits."""
    x = logits.detach().to(torch.float64).requires_grad_(True)
    per_task, total = reference.multitask_loss(x, targets.to(torch.float64), weights.to(torch.float64), spec)
    (grad,) = torch.autograd.grad(
        [per_task, total], x, [upstream.to(torch.float64), torch.tensor(total_grad, dtype=torch.float64)]
    )
    return per_task.detach(), total.detach(), grad


def fused_loss(spec, logits, targets, weights, upstream, total_grad, backend, device):
    """The public op on `device`: per_task, total and the same gradient, on the CPU."""
    x = logits.detach().to(device).requires_grad_(True)
    per_task, total = bfdkern.multitask_loss(x, targets.to(device), spec, weights.to(device), backend=backend)
    up = upstream.to(device=device, dtype=per_task.dtype)
    (grad,) = torch.autograd.grad(
        [per_task, total], x, [up, torch.tensor(total_grad, dtype=total.dtype, device=device)]
    )
    return per_task.detach().cpu(), total.detach().cpu(), grad.cpu()


def assert_matches(spec, logits, targets, weights, backend, device, *, upstream=None, total_grad=0.3):
    """The op agrees with the float64 reference (loss, total and gradient; shapes and dtypes exact)."""
    k = spec.num_tasks
    upstream = torch.rand(k, dtype=torch.float64) * 2 - 0.5 if upstream is None else upstream
    want = reference_loss(spec, logits, targets, weights, upstream, total_grad)
    got = fused_loss(spec, logits, targets, weights, upstream, total_grad, backend, device)
    ct = reference.compute_dtype(logits.dtype)
    per_task, total, grad = got
    assert per_task.shape == (k,) and per_task.dtype == ct
    assert total.shape == () and total.dtype == ct
    assert grad.shape == logits.shape and grad.dtype == logits.dtype
    for name, t in zip(("per_task", "total", "grad"), got):
        assert torch.isfinite(t).all(), f"{name} has non-finite entries: {t}"
    rtol, atol = LOSS_TOL[ct]
    torch.testing.assert_close(per_task.double(), want[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(total.double(), want[1], rtol=rtol, atol=atol * k)
    scale = want[2].abs().max().item() + 1e-30
    torch.testing.assert_close(grad.double(), want[2], rtol=0, atol=GRAD_TOL[logits.dtype] * scale)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 2, 5, 16, 57])
def test_matches_reference(target, batch, dtype):
    backend, device = target
    if interpreted(backend, device) and batch > 16:
        pytest.skip("the Triton interpreter is slow: small batches only")
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, batch, dtype=dtype)
    assert_matches(spec, logits, targets, weights, backend, device)


def test_blades_spec_mostly_missing(target):
    """Half the labels missing, few ordinal values (many ties), the default spec."""
    backend, device = target
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 13, dtype=torch.float32, missing=0.5)
    assert_matches(spec, logits, targets, weights, backend, device)


def test_empty_tasks_give_zero_loss_and_gradient(target):
    """An all-missing task and an ordinal task with one label (no pair) contribute exactly 0."""
    backend, device = target
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 9, dtype=torch.float64)
    for name in ("iso", "make", "region", "stage"):
        targets[:, spec.target_columns(name)] = float("nan")
    targets[:, spec.target_columns("aperture")] = float("nan")
    targets[4, spec.target_columns("aperture")] = 2.0
    assert_matches(spec, logits, targets, weights, backend, device)
    per_task, _, grad = fused_loss(spec, logits, targets, weights, torch.ones(spec.num_tasks), 1.0, backend, device)
    for name in ("iso", "aperture", "make", "region", "stage"):
        assert per_task[spec.index(name)].item() == 0.0, name
        assert (grad[:, spec.columns(name)] == 0).all(), name


def test_all_ties(target):
    """Every ordinal label equal: g = 1/2 for every pair."""
    backend, device = target
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 11, dtype=torch.float64, missing=0.0)
    targets[:, spec.target_columns("iso")] = 3.0
    assert_matches(spec, logits, targets, weights, backend, device)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_large_logits_stay_finite(target, dtype):
    """Logits of +-1e4: no overflow, no NaN, and still the reference's values."""
    backend, device = target
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 12, dtype=torch.float64)
    logits = (torch.sign(logits) * 1e4).to(dtype)
    logits[::3] = logits[::3] * 1e-4 * torch.rand(logits[::3].shape, dtype=torch.float64).to(dtype)  # mixed scales
    assert_matches(spec, logits, targets, weights, backend, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_logits(target, dtype):
    """Half logits are read as they are and upcast: losses in float32, gradient in the logits' dtype."""
    backend, device = target
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 10, dtype=dtype)
    assert_matches(spec, logits, targets, weights, backend, device)


def test_upstream_vectors(target):
    """The backward honours any K-vector: one-hot, negative, zero and a mixture, with grad of the total."""
    backend, device = target
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 8, dtype=torch.float64)
    k = spec.num_tasks
    for upstream, total_grad in (
        (torch.nn.functional.one_hot(torch.tensor(0), k).double(), 0.0),
        (-torch.nn.functional.one_hot(torch.tensor(k - 1), k).double() * 3, 0.0),
        (torch.zeros(k, dtype=torch.float64), 1.0),
        (torch.linspace(-2, 5, k, dtype=torch.float64), -0.5),
    ):
        assert_matches(spec, logits, targets, weights, backend, device, upstream=upstream, total_grad=total_grad)


def test_weights_gradient(target):
    """d total / d weights = per_task (through the public op's autograd)."""
    backend, device = target
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 6, dtype=torch.float64, device=device)
    w = weights.clone().requires_grad_(True)
    per_task, total = bfdkern.multitask_loss(logits, targets, spec, w, backend=backend)
    (grad_w,) = torch.autograd.grad(total, w)
    torch.testing.assert_close(grad_w, per_task.detach())


def test_gradcheck(target):
    backend, device = target
    spec = small_spec()
    logits, targets, weights = random_inputs(spec, 5, dtype=torch.float64, device=device)
    x = logits.requires_grad_(True)
    # The reference's full gradcheck is test_reference_gradgradcheck's; the Triton interpreter is slow.
    fast = backend == "reference" or interpreted(backend, device)
    assert torch.autograd.gradcheck(
        lambda z: bfdkern.multitask_loss(z, targets, spec, weights, backend=backend), (x,), fast_mode=fast
    )


def test_gradgradcheck(target):
    """Double backward (create_graph) is recomputed through the reference, for every backend."""
    backend, device = target
    spec = small_spec()
    logits, targets, weights = random_inputs(spec, 4, dtype=torch.float64, device=device)
    x = logits.requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        lambda z: bfdkern.multitask_loss(z, targets, spec, weights, backend=backend)[0], (x,), fast_mode=True
    )


def test_reference_gradgradcheck():
    spec = small_spec()
    logits, targets, _ = random_inputs(spec, 5, dtype=torch.float64)
    x = logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: reference.per_task_losses(z, targets, spec), (x,))
    assert torch.autograd.gradgradcheck(lambda z: reference.per_task_losses(z, targets, spec), (x,))


def test_opcheck_public_op(target):
    backend, device = target
    spec = levels_spec()
    logits, targets, weights = random_inputs(spec, 6, dtype=torch.float32, device=device)
    args = (logits.requires_grad_(True), targets, weights, *spec.layout, backend)
    torch.library.opcheck(torch.ops.bfdkern.multitask_loss.default, args)


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)])
def test_opcheck_compiled_ops(device):
    """The bfdkern_C schemas with their fake kernels (bfdkern/ops/fake_kernels.py)."""
    backend = "cpp" if device == "cpu" else "cuda"
    dev = require(backend, device, "multitask_loss")
    spec = levels_spec()
    a = spec.layout
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        logits, targets, weights = random_inputs(spec, 7, dtype=dtype, device=dev)
        ct = reference.compute_dtype(dtype)
        torch.library.opcheck(torch.ops.bfdkern_C.multitask_loss_fwd.default, (logits, targets, weights.to(ct), *a))
        upstream = torch.rand(spec.num_tasks, dtype=ct, device=dev)
        torch.library.opcheck(torch.ops.bfdkern_C.multitask_loss_bwd.default, (upstream, logits, targets, *a))


@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)])
def test_compiled_ops_repeat_bitwise(device):
    """No races, no order-dependent reductions: two runs give the same bits (and, on the CPU, so do
    one and two threads)."""
    backend = "cpp" if device == "cpu" else "cuda"
    dev = require(backend, device, "multitask_loss")
    spec = levels_spec()
    # Large enough that the CPU kernel splits the pair work over two threads.
    logits, targets, weights = random_inputs(spec, 700, dtype=torch.float32, device=dev)
    a = spec.layout
    upstream = torch.rand(spec.num_tasks, device=dev)

    def run():
        fwd = torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, weights, *a)
        return (*fwd, torch.ops.bfdkern_C.multitask_loss_bwd(upstream, logits, targets, *a))

    first = run()
    runs = [run()]
    if dev.type == "cpu":
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            runs.append(run())
        finally:
            torch.set_num_threads(threads)
    for again in runs:
        for x, y in zip(first, again):
            assert torch.equal(x, y)


HELPED_RUNS = """
import torch
from tests.helpers import random_inputs
from tests.ops.test_multitask_loss import levels_spec

spec = levels_spec()
for dtype in (torch.float32, torch.float64):
    for batch in (300, 1500):
        logits, targets, weights = random_inputs(spec, batch, seed=batch, dtype=dtype)
        upstream = torch.rand(spec.num_tasks, dtype=weights.dtype)

        def run():
            fwd = torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, weights, *spec.layout)
            return (*fwd, torch.ops.bfdkern_C.multitask_loss_bwd(upstream, logits, targets, *spec.layout))

        import bfdkern.ops.extension as e
        assert e.cpp_unavailable() is None
        torch.set_num_threads(1)
        alone = run()
        torch.set_num_threads(2)
        for _ in range(20):
            assert all(torch.equal(a, b) for a, b in zip(alone, run())), (dtype, batch)
print("same bits")
"""


def test_cpu_helper_threads_give_the_same_bits():
    """The C++ loss with its helper threads allowed whatever the machine's load
    ($BFDKERN_CPU_IDLE_CORES=1): units run on whichever thread claims them, and the results equal
    those of one thread bit for bit, call after call."""
    require("cpp", "cpu", "multitask_loss")
    env = {**os.environ, "BFDKERN_CPU_IDLE_CORES": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", HELPED_RUNS], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "same bits" in done.stdout, done.stderr[-2000:]


TEAM_OR_HELPERS = """
import os, sys, torch
from tests.helpers import random_inputs
import bfdkern.ops.extension as extension
from tests.ops.test_multitask_loss import levels_spec

assert extension.cpp_unavailable() is None
torch.set_num_interop_threads(1)
torch.set_num_threads(1)  # the inputs are made before any team exists
spec = levels_spec()
logits, targets, weights = random_inputs(spec, 1500, seed=3, dtype=torch.float64)
alone = torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, weights, *spec.layout)
torch.set_num_threads(4)
before = len(os.listdir("/proc/self/task"))
helped = torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, weights, *spec.layout)
assert all(torch.equal(a, b) for a, b in zip(alone, helped))
print("new threads", len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc/self/task")
@pytest.mark.parametrize(("idle", "new_threads"), [("3", 3), ("1", 1), ("0", 0)], ids=["team", "helper", "alone"])
def test_cpu_threads_follow_the_idle_cores(idle, new_threads):
    """With 4 intra-op threads: every other core idle forms torch's team (its 3 OpenMP workers start); one
    idle core wakes one inter-op helper instead (ATen's team would have all 4 members, 3 without a core:
    the call would wait for them); none idle, the caller works alone. Same bits in every case."""
    require("cpp", "cpu", "multitask_loss")
    env = {**os.environ, "BFDKERN_CPU_IDLE_CORES": idle, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", TEAM_OR_HELPERS], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"new threads {new_threads}\n" in done.stdout, done.stdout


def test_compiled_op_invalid_labels_give_nan_not_a_crash():
    """Called directly (no label check), the C++ kernel turns a class index out of range into a NaN
    loss for that task alone; it never reads outside the logits."""
    require("cpp", "cpu", "multitask_loss")
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 6, dtype=torch.float32, missing=0.0)
    targets[2, spec.target_columns("make")] = 1e6
    a = spec.layout
    per_task, _ = torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, weights, *a)
    make = spec.index("make")
    assert torch.isnan(per_task[make])
    assert torch.isfinite(per_task[torch.arange(spec.num_tasks) != make]).all()


def test_compiled_op_rejects_bad_layout():
    require("cpp", "cpu", "multitask_loss")
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 4, dtype=torch.float32)
    a = spec.layout
    with pytest.raises(ValueError, match="columns"):
        torch.ops.bfdkern_C.multitask_loss_fwd(logits[:, :-1], targets, weights, *a)
    bad = a._replace(col_offsets=(0, *a.col_offsets[1:][::-1]))
    with pytest.raises(ValueError, match="packed contiguously"):
        torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, weights, *bad)
    with pytest.raises(ValueError, match=f"K={spec.num_tasks}"):
        torch.ops.bfdkern_C.multitask_loss_bwd(weights[:3], logits, targets, *a)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("make", 10.0, "task 'make' \\(categorical\\)"),
        ("make", 2.5, "task 'make' \\(categorical\\)"),
        ("manipulated", -1.0, "task 'manipulated' \\(binary\\)"),
        ("region", 2.0, "task 'region' \\(multilabel\\)"),
        ("iso", float("inf"), "task 'iso' \\(ordinal\\)"),
    ],
)
def test_bad_labels_name_the_task(target, column, value, message):
    backend, device = target
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 4, dtype=torch.float32)
    targets[1, spec.target_columns(column).start] = value
    with pytest.raises(ValueError, match=message):
        bfdkern.multitask_loss(logits.to(device), targets.to(device), spec, weights.to(device), backend=backend)


def test_bad_shapes_dtypes_devices(target):
    backend, device = target
    spec = blades_spec()
    logits, targets, weights = (t.to(device) for t in random_inputs(spec, 4, dtype=torch.float32))
    c = spec.num_columns
    cases = [
        ((logits[:, :-1], targets, weights), f"logits have {c - 1} columns but the spec needs {c} \\(iso:"),
        ((logits, targets[:, :-1], weights), f"targets must be \\[B=4, J={spec.num_targets}\\]"),
        ((logits, targets, weights[:-1]), f"weights must be \\[K={spec.num_tasks}\\]"),
        ((logits.long(), targets, weights), "logits must be floating point"),
        ((logits, targets.to(torch.int32), weights), "targets must be floating point"),
        ((logits, targets.to("meta"), weights), "different devices"),
        ((logits[0], targets, weights), "logits must be \\[B, C\\]"),
    ]
    for (lg, tg, wt), message in cases:
        with pytest.raises(ValueError, match=message):
            bfdkern.multitask_loss(lg, tg, spec, wt, backend=backend)


def test_unavailable_backend_lists_every_reason():
    cpu = torch.device("cpu")
    logits, targets, weights = random_inputs(blades_spec(), 3, dtype=torch.float32)
    with pytest.raises(BackendUnavailable) as info:
        bfdkern.multitask_loss(logits, targets, blades_spec(), weights, backend="cuda")
    text = str(info.value)
    assert "the CUDA kernels run on CUDA tensors, got cpu" in text
    for b in BACKENDS:
        assert f"  {b}: {dispatch.why_not(b, cpu) or 'available'}" in text
    with pytest.raises(BackendUnavailable, match="unknown backend 'fastest'"):
        bfdkern.multitask_loss(logits, targets, blades_spec(), weights, backend="fastest")


def test_environment_override(monkeypatch):
    cpu = torch.device("cpu")
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 5, dtype=torch.float64)
    monkeypatch.setenv("BFDKERN_BACKEND", "reference")
    assert dispatch.select(cpu).name == "reference"
    per_task, _ = bfdkern.multitask_loss(logits, targets, spec, weights)
    torch.testing.assert_close(per_task, reference.per_task_losses(logits, targets, spec), rtol=0, atol=0)
    monkeypatch.setenv("BFDKERN_BACKEND", "cuda")
    with pytest.raises(BackendUnavailable, match="backend 'cuda' cannot serve cpu tensors"):
        bfdkern.multitask_loss(logits, targets, spec, weights)
    assert dispatch.select(cpu, "reference").name == "reference"  # an explicit request wins over the variable


def test_default_backend_is_the_fastest_available():
    cpu = torch.device("cpu")
    expected = "cpp" if dispatch.why_not("cpp", cpu) is None else "reference"
    assert dispatch.select(cpu).name == expected
