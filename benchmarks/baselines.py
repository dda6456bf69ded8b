"""Straightforward reference implementations that the benchmarks measure against, in one
module, so every speedup is measured against the same honest baseline."""

from __future__ import annotations

import torch

from bfdkern.ops import reference
from bfdkern.tasks import TaskSpec


def loss_forward_backward(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, spec: TaskSpec):
    """The multi-task loss as plain PyTorch autograd (materialises the B x B pair matrices)."""
    x = logits.detach().requires_grad_(True)
    per_task, total = reference.multitask_loss(x, targets, weights, spec)
    total.backward()
    return per_task.detach(), x.grad
