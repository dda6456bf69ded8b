"""The paired evaluation: the per-task loss vectors L(theta+) and L(theta-) on the training batch.

Both parameter sets run in one batched forward: ``torch.func.functional_call`` under ``vmap`` over
the two stacked sets (the ``[2, N]`` output of ``perturb_pair`` viewed per parameter, no copy),
with ``randomness="same"`` so both sides draw the same dropout masks. The evaluation:

* runs under ``torch.inference_mode`` (no graph);
* uses the model's current mode, so BatchNorm normalises with batch statistics exactly when the
  inner loss did;
* passes cloned buffers, so the model's BatchNorm running statistics are untouched;
* replays the random state of the forward at theta (``rng_state``) inside a forked stream, so
  the masks are those of the inner loss and the global streams do not advance.

:func:`paired_losses` with ``batched=False`` runs the two forwards one after the other (half the
activation memory, no vmap); the results agree to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from bfdkern.bilevel.objective import as_objective
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.precision import autocast
from bfdkern.bilevel.rng import RngState, replay


def cloned_buffers(model: nn.Module, copies: int | None = None) -> dict[str, Tensor]:
    """name -> a detached copy of each buffer (BatchNorm running statistics, counters), so that a
    functional forward in train mode updates the copies, not the model. With ``copies``, stacked
    ``[copies, *shape]`` for ``vmap`` (one set of statistics per parameter set)."""
    if copies is None:
        return {n: b.detach().clone() for n, b in model.named_buffers()}
    return {n: b.detach().unsqueeze(0).expand(copies, *b.shape).clone() for n, b in model.named_buffers()}


def paired_losses(
    model: nn.Module,
    objective,
    layout: ParamLayout,
    pair: Tensor,
    batch,
    *,
    batched: bool = True,
    rng_state: RngState | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """Per-task losses at the two parameter sets of ``pair``.

    Args:
        model: the model (its outputs are what ``objective`` reads).
        objective: an :class:`~bfdkern.bilevel.objective.Objective`, or a TaskSpec (fused loss, default backend).
        layout: the trainable parameters (the others keep the model's values).
        pair: [2, N] flat parameter sets (row 0 = theta+, row 1 = theta-), master dtype.
        batch: the training batch (on the model's device).
        batched: one vmapped forward (default) or two sequential forwards.
        rng_state: random state to replay (that of the forward at theta); None = the current one.
        amp_dtype: autocast dtype of the forward (None = the parameters' dtype).

    Returns:
        [2, K] per-task losses (as ``objective.losses`` gives them), row 0 at theta+.
    """
    objective = as_objective(objective)
    params = layout.pair_views(pair, dtype=layout.dtype)
    inputs = objective.inputs(batch)
    device = layout.device
    state = rng_state if rng_state is not None else RngState.capture(device)
    with torch.inference_mode(), replay(state, device), autocast(device, amp_dtype):
        if batched:
            buffers = cloned_buffers(model, copies=2)

            def forward(p, b):
                return functional_call(model, {**p, **b}, inputs)

            outputs = vmap(forward, randomness="same")(params, buffers)
            sides = [tree_map(lambda t, i=i: t[i], outputs) for i in range(2)]
        else:
            sides = []
            for i in range(2):
                if state is not None:
                    state.restore()  # the same dropout masks on both sides
                side = {n: t[i] for n, t in params.items()}
                sides.append(functional_call(model, {**side, **cloned_buffers(model)}, inputs))
        losses = torch.stack([objective.losses(z, batch) for z in sides])
    return losses.clone()  # a normal tensor, usable outside inference mode
