"""The N-sized buffers a bi-level step reuses from step to step.

A fresh N-sized buffer costs page faults on the CPU every step, and a CUDA graph needs buffers at fixed
addresses; so the trainer allocates these once:

* ``grad`` [N]: the trained parameters' ``.grad`` are views of it. Within an outer step it holds, in
  turn, g = grad_theta sum_k lambda_k l_k (step 1), theta' written over g (step 2, for modes whose g has no
  graph), and the real update's gradient (step 5). A plain step accumulates its gradient there.
* ``v`` [N]: the validation gradient v = grad_theta' l_1(B_val; theta') (step 2).
* ``pair`` [2, N]: theta+ and theta- (step 3 of ``fd``), in the master dtype like the theta they perturb.

Half-precision parameters get none of these (their gradients are not master-dtype views).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bfdkern.bilevel.params import ParamLayout


class StepWorkspace:
    """The persistent buffers of one trainer (see the module doc).

    Args:
        layout: the trained parameters.
        pair: keep a [2, N] theta+- buffer (the ``fd`` mode).
    """

    def __init__(self, layout: ParamLayout, pair: bool):
        self.layout = layout
        self.enabled = layout.dtype == layout.master_dtype
        self.wants_pair = pair
        self.grad: Tensor | None = None
        self._grad_views: list[Tensor] = []
        self.v: Tensor | None = None
        self.pair: Tensor | None = None
        self.holds = "nothing"
        """What ``grad`` holds now: ``g``, ``theta'`` or ``update gradient`` (for readers and tests)."""

    def bind_grads(self, optimizer: torch.optim.Optimizer) -> bool:
        """Zero ``grad`` and make it the parameters' ``.grad`` (views; gradients of every backward then
        accumulate there in place). False, with the gradients set to None instead, for half precision."""
        layout = self.layout
        if not self.enabled:
            optimizer.zero_grad(set_to_none=True)
            return False
        if self.grad is None:
            self.grad = torch.zeros(layout.numel, dtype=layout.dtype, device=layout.device)
            self._grad_views = layout.views(self.grad)
        else:
            self.grad.zero_()
        for p, view in zip(layout.params, self._grad_views):
            if p.grad is not view:
                p.grad = view
        self.holds = "g"
        return True

    def clear_for_update(self) -> None:
        """Zero ``grad`` (it held theta'), so the real update's backward accumulates there."""
        self.grad.zero_()
        self.holds = "update gradient"

    def v_buffer(self) -> Tensor | None:
        """The [N] buffer for v (None for half precision)."""
        if not self.enabled:
            return None
        if self.v is None:
            self.v = torch.empty(self.layout.numel, dtype=self.layout.master_dtype, device=self.layout.device)
        return self.v

    def pair_buffer(self) -> Tensor | None:
        """The [2, N] buffer for theta+- (None when the mode has no pair)."""
        if not self.wants_pair:
            return None
        if self.pair is None:
            layout = self.layout
            self.pair = torch.empty(2, layout.numel, dtype=layout.master_dtype, device=layout.device)
        return self.pair
