"""The hypergradient of one bi-level step, computed apart from any trainer (the model is left untouched).

The modes and their maths: :mod:`bfdkern.bilevel.modes`; the passes through the model:
:mod:`bfdkern.bilevel.passes`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bfdkern.bilevel.modes import MODES, Hypergradient, OuterStep, get_mode
from bfdkern.bilevel.objective import as_objective, to_device
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.passes import inner_pass
from bfdkern.bilevel.precision import check_amp_dtype
from bfdkern.bilevel.rng import replay
from bfdkern.bilevel.virtual_step import VirtualStep

__all__ = ["MODES", "Hypergradient", "hypergradient", "raise_batch_problems"]


def raise_batch_problems(checks) -> None:
    """Raise the first condition of a batch's :class:`~bfdkern.bilevel.objective.BatchChecks` that holds (one
    host sync); nothing when ``checks`` is None."""
    if checks is None:
        return
    for condition, bad in zip(checks.conditions, checks.flags.tolist()):
        if bad:
            raise (condition.error or ValueError)(condition.template.replace("{items}", condition.item))


def hypergradient(
    model: nn.Module,
    objective,
    batch_tr,
    batch_val,
    weights: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    mode: str = "fd",
    radius: float = 0.01,
    batched: bool = True,
    amp_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> Hypergradient:
    """The hypergradient of one bi-level step, leaving the model untouched.

    Args:
        model: the model; its current mode (train/eval) decides BatchNorm's batch statistics and dropout.
        objective: an :class:`~bfdkern.bilevel.objective.Objective`, or a TaskSpec (the model returns packed
            logits [B, C], batches are (inputs, targets [B, J]); its outer tasks form l_1).
        batch_tr: training batch B_tr.
        batch_val: validation batch B_val (needs outer labels).
        weights: [K] task weights lambda.
        optimizer: the real optimizer: alpha = its current lr, wd its weight decay, SGD momentum
            buffers honoured.
        mode: ``fd`` | ``jvp`` | ``unroll``.
        radius: r in eps = r / ||v||.
        batched: ``fd``: both perturbed sides in one vmapped forward (else two forwards).
        amp_dtype: None or torch.bfloat16 (autocast; the perturbation stays float32).
        backend: loss/perturbation backend of a TaskSpec (default by device).

    Returns:
        :class:`Hypergradient` (value [K] = d l_1(theta') / d lambda). Parameters, their ``.grad``,
        buffers and the global random streams are unchanged afterwards.
    """
    method = get_mode(mode)
    check_amp_dtype(amp_dtype)
    objective = as_objective(objective, backend)
    if weights.shape != (objective.num_tasks,):
        raise ValueError(f"weights must be [K={objective.num_tasks}], got {tuple(weights.shape)}")
    layout = ParamLayout.from_model(model, optimizer)
    batch_tr, checks_tr = objective.prepare(to_device(batch_tr, layout.device), "training batch")
    batch_val, checks_val = objective.prepare(to_device(batch_val, layout.device), "validation batch", outer=True)
    raise_batch_problems(checks_tr)
    raise_batch_problems(checks_val)
    virtual = VirtualStep.from_optimizer(optimizer, layout)
    with replay(None, layout.device):
        inner = inner_pass(
            model,
            objective,
            layout,
            batch_tr,
            weights,
            differentiable=method.differentiates_inner_gradient,
            functional=True,
            amp_dtype=amp_dtype,
        )
        step = OuterStep(
            model,
            objective,
            layout,
            virtual,
            inner,
            batch_tr,
            batch_val,
            radius=radius,
            batched_pair=batched,
            consume_grads=True,
            amp_dtype=amp_dtype,
        )
        return method.estimate(step)
