"""Straightforward reference implementations that the benchmarks measure against, in one
module, so every speedup is measured against the same honest baseline."""

from __future__ import annotations

import copy

import torch

from bfdkern.ops import reference
from bfdkern.tasks import TaskSpec


def loss_forward_backward(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, spec: TaskSpec):
    """The multi-task loss as plain PyTorch autograd (materialises the B x B pair matrices)."""
    x = logits.detach().requires_grad_(True)
    per_task, total = reference.multitask_loss(x, targets, weights, spec)
    total.backward()
    return per_task.detach(), x.grad


def loss_jvp(logits: torch.Tensor, targets: torch.Tensor, tangent: torch.Tensor, spec: TaskSpec):
    """(per_task, its directional derivative along ``tangent``) by forward-mode AD through the plain
    PyTorch losses (what the bi-level ``jvp`` mode ran before the fused op had a forward-mode rule)."""
    with torch.no_grad():
        return torch.func.jvp(lambda x: reference.per_task_losses(x, targets, spec), (logits,), (tangent,))


def research_bilevel_step(
    model: torch.nn.Module,
    spec: TaskSpec,
    lambdas: torch.Tensor,
    lambda_optimizer: torch.optim.Optimizer,
    optimizer: torch.optim.Optimizer,
    batch_tr,
    batch_val,
    radius: float = 0.01,
) -> torch.Tensor:
    """One bi-level step (fd hypergradient, paper order) as research code writes it.

    A deep copy of the model takes the virtual SGD step; v is the validation gradient of the copy;
    the real model is perturbed in place (+eps v, -2 eps v, +eps v) with autograd on; the real
    update runs a fresh forward with the new lambda. ``lambdas`` [K] is the leaf Adam updates.
    Losses through plain PyTorch (:mod:`bfdkern.ops.reference`). Returns the hypergradient [K].
    """
    (x_tr, y_tr), (x_val, y_val) = batch_tr, batch_val
    lr = optimizer.param_groups[0]["lr"]
    wd = optimizer.param_groups[0].get("weight_decay", 0.0)
    outer = list(spec.outer_indices)

    # 1. virtual step on a copy
    virtual = copy.deepcopy(model)
    per_task = reference.per_task_losses(virtual(x_tr), y_tr, spec)
    grads = torch.autograd.grad((lambdas.detach() * per_task).sum(), list(virtual.parameters()))
    with torch.no_grad():
        for p, g in zip(virtual.parameters(), grads):
            p.sub_(lr * (g + wd * p))

    # 2. validation gradient at theta'
    val_loss = reference.per_task_losses(virtual(x_val), y_val, spec)[outer].sum()
    v = torch.autograd.grad(val_loss, list(virtual.parameters()))
    eps = radius / torch.cat([d.reshape(-1) for d in v]).norm()

    # 3. finite difference, perturbing the real model in place
    params = list(model.parameters())
    with torch.no_grad():
        for p, d in zip(params, v):
            p.add_(eps * d)
    loss_plus = reference.per_task_losses(model(x_tr), y_tr, spec)
    with torch.no_grad():
        for p, d in zip(params, v):
            p.sub_(2 * eps * d)
    loss_minus = reference.per_task_losses(model(x_tr), y_tr, spec)
    with torch.no_grad():
        for p, d in zip(params, v):
            p.add_(eps * d)
    hypergrad = -lr * (loss_plus - loss_minus).detach() / (2 * eps)

    # 4. lambda step
    lambda_optimizer.zero_grad()
    lambdas.grad = hypergrad.to(lambdas.dtype)
    lambda_optimizer.step()

    # 5. real update with the new lambda, fresh forward
    optimizer.zero_grad()
    per_task = reference.per_task_losses(model(x_tr), y_tr, spec)
    (lambdas.detach() * per_task).sum().backward()
    optimizer.step()
    return hypergrad
