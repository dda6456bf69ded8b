"""The virtual step theta' = theta - alpha (grad_theta sum_i lambda_i l_i + wd theta), read from the
real optimizer.

alpha is the optimizer's current learning rate and wd its weight decay, per parameter group (so
a scheduler's lr and groups without decay are honoured). When the optimizer is SGD with momentum,
the virtual step is the SGD step the optimizer would take, momentum buffer included:
``d = c * (g + wd theta) + m`` with ``c, m`` from the buffer (see :meth:`VirtualStep.from_optimizer`).
For every other optimizer (AdamW, the paper's choice) the virtual step is a plain SGD step.

theta' depends on lambda only through g, linearly: d theta' / d lambda_i = -alpha c grad l_i, so the
hypergradient is -alpha c J(theta) v per parameter; :attr:`VirtualStep.scale` is alpha c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bfdkern.bilevel.params import ParamLayout


@dataclass(frozen=True)
class VirtualStep:
    """Per parameter i: ``theta'_i = theta_i - lr_i (coef_i (g_i + wd_i theta_i) + momentum_i)``.

    Attributes:
        lr: alpha per parameter (the group's current lr).
        weight_decay: wd per parameter.
        coef: c per parameter (1 for a plain step; from the SGD momentum settings otherwise).
        momentum: the lambda-independent momentum term per parameter (None where there is none).
    """

    lr: tuple[float, ...]
    weight_decay: tuple[float, ...]
    coef: tuple[float, ...]
    momentum: tuple[Tensor | None, ...]

    @classmethod
    def from_optimizer(cls, optimizer: torch.optim.Optimizer, layout: ParamLayout) -> VirtualStep:
        """Read lr, weight decay and (SGD) momentum buffers for the layout's parameters now.

        SGD with momentum mu, dampening d and buffer b (as ``torch.optim.SGD`` updates it):
        no buffer yet: c = 1 (1 + mu with Nesterov), m = 0; with a buffer: c = 1 - d and m = mu b
        (Nesterov: c = 1 + mu (1 - d), m = mu^2 b).
        """
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        is_sgd = isinstance(optimizer, torch.optim.SGD)
        lrs, wds, coefs, moms = [], [], [], []
        for name, p in zip(layout.names, layout.params):
            g = group_of[id(p)]
            if g.get("maximize", False):
                raise ValueError(f"optimizer group of {name!r} has maximize=True; the bi-level step minimises")
            lr = float(g["lr"])
            wd = float(g.get("weight_decay", 0.0) or 0.0)
            coef, mom = 1.0, None
            mu = float(g.get("momentum", 0.0) or 0.0) if is_sgd else 0.0
            if mu != 0.0:
                damp = float(g.get("dampening", 0.0) or 0.0)
                nesterov = bool(g.get("nesterov", False))
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is None:
                    coef = 1.0 + mu if nesterov else 1.0
                else:
                    coef = 1.0 + mu * (1.0 - damp) if nesterov else 1.0 - damp
                    mom = buf.detach() * (mu * mu if nesterov else mu)
            lrs.append(lr)
            wds.append(wd)
            coefs.append(coef)
            moms.append(mom)
        return cls(tuple(lrs), tuple(wds), tuple(coefs), tuple(moms))

    @property
    def scales(self) -> tuple[float, ...]:
        """alpha c per parameter: d theta'_i / d lambda_k = -scale_i grad_i l_k."""
        return tuple(lr * c for lr, c in zip(self.lr, self.coef))

    @property
    def scale(self) -> float:
        """The largest alpha c: the factor in front of the hypergradient (the paper's alpha)."""
        return max(self.scales)

    @property
    def uniform(self) -> bool:
        """Every parameter has the same alpha c (the usual single-group case)."""
        return len(set(self.scales)) == 1

    def apply(self, theta: Tensor, grads: list[Tensor], layout: ParamLayout) -> Tensor:
        """theta' as a new flat ``[N]`` buffer (no graph) from flat ``theta`` and per-parameter ``grads``."""
        with torch.no_grad():
            out = theta.clone()
            views = layout.views(out)
            for i, (t, g) in enumerate(zip(views, grads)):
                d = g.detach().to(t.dtype)
                if self.weight_decay[i] != 0.0:
                    d = d + self.weight_decay[i] * t
                if self.coef[i] != 1.0:
                    d = d * self.coef[i]
                if self.momentum[i] is not None:
                    d = d + self.momentum[i].to(t.dtype)
                t.sub_(d, alpha=self.lr[i])
        return out

    def apply_(self, grads: list[Tensor], params: tuple[Tensor, ...]) -> list[Tensor]:
        """theta' per parameter, written over ``grads`` (which the caller no longer needs), in the
        parameters' dtype: the virtual step without allocating another N values."""
        # autograd may hand back expanded (stride-0) gradients, or one tensor for two parameters
        # (the gradient of a + b): copy those first, before anything is written.
        work, seen = [], set()
        for p, g in zip(params, grads):
            d = g.detach()
            start = d.data_ptr()  # disjoint views of one flat gradient buffer are fine
            if not d.is_contiguous() or d.dtype != p.dtype or start in seen:
                d = d.to(p.dtype, memory_format=torch.contiguous_format, copy=True)
            seen.add(start)
            work.append(d)
        with torch.no_grad():
            for i, (p, d) in enumerate(zip(params, work)):
                if self.weight_decay[i] != 0.0:
                    d.add_(p, alpha=self.weight_decay[i])
                # theta - lr c d in one pass, written over d
                torch.add(p, d, alpha=-self.lr[i] * self.coef[i], out=d)
                if self.momentum[i] is not None:
                    d.add_(self.momentum[i].to(p.dtype), alpha=-self.lr[i])
        return work

    def apply_differentiable(self, params: tuple[Tensor, ...], grads: list[Tensor]) -> list[Tensor]:
        """theta' per parameter, differentiable in ``grads`` (built with ``create_graph=True``): the
        unrolled path, where the hypergradient is the gradient of l_1(theta') through this step."""
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            d = g
            if self.weight_decay[i] != 0.0:
                d = d + self.weight_decay[i] * p.detach()
            if self.coef[i] != 1.0:
                d = d * self.coef[i]
            if self.momentum[i] is not None:
                d = d + self.momentum[i].to(p.dtype)
            out.append(p.detach() - self.lr[i] * d)
        return out

    def direction(self, v: Tensor, layout: ParamLayout) -> Tensor:
        """The perturbation direction for flat ``v``: v itself when every parameter has the same
        alpha c, else ``v_i * scale_i / scale`` (so that -scale J w is the hypergradient)."""
        if self.uniform or self.scale == 0.0:
            return v
        w = v.clone()
        for t, s in zip(layout.views(w), self.scales):
            if s != self.scale:
                t.mul_(s / self.scale)
        return w
