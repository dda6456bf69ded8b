"""TaskWeights: lambda's parametrisations and its device-side Adam, which takes exactly torch.optim.Adam's
steps (bitwise, on the CPU), can be withheld by a device flag, and restores from Adam's state dict."""

from __future__ import annotations

import pytest
import torch

from bfdkern.bilevel import TaskWeights


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("parametrization", ["raw", "softplus", "softmax"])
def test_adam_steps_are_torch_adams_bit_for_bit(dtype, parametrization):
    k = 5
    init = torch.full((k,), 1.0, dtype=dtype) if parametrization == "softmax" else torch.rand(k, dtype=dtype) + 0.5
    weights = TaskWeights(k, init, parametrization=parametrization, lr=3e-3, dtype=dtype)
    raw = torch.nn.Parameter(weights.raw.detach().clone())
    adam = torch.optim.Adam([raw], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(1000):
        hypergrad = torch.randn(k, generator=g, dtype=dtype) * 10.0 ** (step % 9 - 6)
        weights.update(hypergrad)
        with torch.enable_grad():
            (raw.grad,) = torch.autograd.grad(weights.weights(raw), raw, hypergrad)
        adam.step()
        assert torch.equal(weights.raw.detach(), raw.detach()), step
    assert torch.equal(weights.exp_avg_sq, adam.state[raw]["exp_avg_sq"])


def test_a_withheld_update_changes_nothing():
    weights = TaskWeights(3, [0.5, 1.0, 2.0], lr=0.1, dtype=torch.float64)
    weights.update(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    before = [t.clone() for t in (weights.raw.detach(), weights.exp_avg, weights.exp_avg_sq, weights.step_count)]
    weights.update(torch.tensor([float("nan"), 1.0, 1.0], dtype=torch.float64), apply=torch.tensor(False))
    after = (weights.raw.detach(), weights.exp_avg, weights.exp_avg_sq, weights.step_count)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    weights.update(torch.ones(3, dtype=torch.float64), apply=torch.tensor(True))
    assert float(weights.step_count) == 2.0


def test_bad_initial_values():
    with pytest.raises(ValueError, match=r"\[K=3\]"):
        TaskWeights(3, [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        TaskWeights(2, [1.0, float("inf")])
    with pytest.raises(ValueError, match="lambda_init > 0"):
        TaskWeights(2, [1.0, 0.0], parametrization="softplus")
    with pytest.raises(ValueError, match="sums to"):
        TaskWeights(2, [1.0, 2.0], parametrization="softmax")
    with pytest.raises(ValueError, match="parametrization"):
        TaskWeights(2, 1.0, parametrization="exp")
