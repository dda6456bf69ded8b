"""The eager fast path and the registered torch.library op compute the same thing, and
torch.compile goes through the registered op."""

import pytest
import torch

from bfdkern.ops import available, multitask_loss, perturb_pair
from bfdkern.ops.multitask_loss import _multitask_loss_op
from bfdkern.ops.perturb import _perturb_pair_op
from bfdkern.tasks import blades_spec
from tests.helpers import random_inputs

CPU = torch.device("cpu")
BACKENDS = [b for b in available(CPU) if b != "triton"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_eager_path_equals_registered_op(backend):
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 7, dtype=torch.float64)
    upstream = torch.rand(spec.num_tasks, dtype=torch.float64) + 0.1
    spec_args = spec.layout

    x1 = logits.clone().requires_grad_(True)
    w1 = weights.clone().requires_grad_(True)
    per_task1, total1 = multitask_loss(x1, targets, spec, w1, backend=backend)
    g1 = torch.autograd.grad((per_task1 * upstream).sum() + 0.5 * total1, (x1, w1))

    x2 = logits.clone().requires_grad_(True)
    w2 = weights.clone().requires_grad_(True)
    per_task2, total2 = _multitask_loss_op(x2, targets, w2, *spec_args, backend)
    g2 = torch.autograd.grad((per_task2 * upstream).sum() + 0.5 * total2, (x2, w2))

    torch.testing.assert_close(per_task1, per_task2, rtol=0, atol=0)
    torch.testing.assert_close(total1, total2, rtol=0, atol=0)
    for a_, b_ in zip(g1, g2):
        torch.testing.assert_close(a_, b_, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_perturb_eager_path_equals_registered_op(backend):
    theta, v = torch.randn(1000), torch.randn(1000)
    for a_, b_ in zip(perturb_pair(theta, v, 0.02, backend=backend), _perturb_pair_op(theta, v, 0.02, backend)):
        torch.testing.assert_close(a_, b_, rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_function_goes_through_the_registered_op():
    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 6, dtype=torch.float32)
    backend = BACKENDS[-1]

    def loss(x):
        return multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)[1]

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    eager, comp = loss(x1), compiled(x2)
    eager.backward()
    comp.backward()
    torch.testing.assert_close(comp, eager)
    torch.testing.assert_close(x2.grad, x1.grad)


@pytest.mark.slow
def test_compiled_perturb_with_workspace_writes_the_callers_buffer():
    """Under torch.compile the functional op runs and its result is copied into out."""
    theta, v = torch.randn(500), torch.randn(500)
    backend = BACKENDS[-1]

    def pair(t, d, out):
        return perturb_pair(t, d, 0.02, backend=backend, out=out)[0]

    compiled = torch.compile(pair, backend="aot_eager", fullgraph=True)
    buf = torch.full((2, 500), float("nan"))
    compiled(theta, v, buf)
    torch.testing.assert_close(buf, perturb_pair(theta, v, 0.02, backend=backend)[0], rtol=0, atol=0)
