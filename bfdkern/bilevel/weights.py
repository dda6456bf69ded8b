"""The task weights lambda: their parametrisation and their Adam step, kept on the device.

lambda = f(rho) for a raw vector rho: ``raw`` (lambda = rho, the paper), ``softplus`` (lambda > 0) or
``softmax`` (lambda = K softmax(rho), sums to K). The hypergradient is taken with respect to lambda and
chained to rho. Adam's state (step count, moments) lives on rho's device and an update can be withheld
by a device flag, so the step reads nothing back to the host and can be captured in a CUDA graph. The
arithmetic is ``torch.optim.Adam``'s (bitwise the same on the CPU, tested), and :meth:`TaskWeights.state_dict`
writes Adam's own format, so checkpoints of either kind load.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PARAMETRIZATIONS = ("raw", "softplus", "softmax")


def initial_raw(init, num_tasks: int, parametrization: str, dtype: torch.dtype, device) -> Tensor:
    """[K] rho with f(rho) = ``init`` (a float or K values); ValueError for values f cannot reach."""
    init = torch.as_tensor(init, dtype=dtype, device=device).detach().clone()
    if init.dim() == 0:
        init = init.expand(num_tasks).clone()
    if init.shape != (num_tasks,):
        raise ValueError(f"lambda_init must be a float or [K={num_tasks}] values, got shape {tuple(init.shape)}")
    values = init.tolist()  # set-up, not a training step: reading the values is fine here
    if not all(math.isfinite(x) for x in values):
        raise ValueError(f"lambda_init must be finite, got {values}")
    if parametrization == "raw":
        return init
    if not all(x > 0 for x in values):
        raise ValueError(f"the {parametrization} parametrisation needs lambda_init > 0, got {values}")
    if parametrization == "softplus":
        return init + torch.log(-torch.expm1(-init))  # softplus^-1, stable for large init
    if not math.isclose(sum(values), num_tasks, rel_tol=1e-6):
        raise ValueError(
            f"the softmax parametrisation keeps sum(lambda) = K = {num_tasks}; lambda_init sums to {sum(values)}"
        )
    return torch.log(init)


class TaskWeights:
    """lambda = f(rho) and Adam on rho.

    Args:
        num_tasks: K.
        init: initial lambda (a float or K values).
        parametrization: ``raw`` | ``softplus`` | ``softmax``.
        lr, betas, eps: Adam's settings (the paper: lr 3e-4).
        dtype, device: of rho (the model's master dtype and device).
    """

    def __init__(
        self,
        num_tasks: int,
        init=1.0,
        *,
        parametrization: str = "raw",
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        dtype: torch.dtype = torch.float32,
        device=None,
    ):
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        if not lr > 0:
            raise ValueError(f"lambda_lr must be > 0, got {lr}")
        self.num_tasks, self.parametrization = num_tasks, parametrization
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.raw = torch.nn.Parameter(initial_raw(init, num_tasks, parametrization, dtype, device))
        self.exp_avg = torch.zeros_like(self.raw, memory_format=torch.preserve_format).detach()
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        # float64, so that beta ** step rounds as Python's (torch.optim.Adam reads its count as a float).
        self.step_count = torch.zeros((), dtype=torch.float64, device=self.raw.device)
        self._half = torch.full((), 0.5, dtype=torch.float64, device=self.raw.device)

    def weights(self, raw: Tensor | None = None) -> Tensor:
        """[K] lambda = f(rho) (differentiable in ``raw``, default rho)."""
        raw = self.raw if raw is None else raw
        if self.parametrization == "raw":
            return raw
        if self.parametrization == "softplus":
            return F.softplus(raw)
        return self.num_tasks * torch.softmax(raw, dim=0)

    @property
    def value(self) -> Tensor:
        """[K] the current lambda (detached copy)."""
        with torch.no_grad():
            return self.weights().detach().clone()

    def _raw_gradient(self, hypergrad: Tensor) -> Tensor:
        if self.parametrization == "raw":
            return hypergrad.detach().to(self.raw.dtype)
        with torch.enable_grad():
            w = self.weights()
            (grad,) = torch.autograd.grad(w, self.raw, hypergrad.detach().to(w.dtype))
        return grad

    def update(self, hypergrad: Tensor, apply: Tensor | None = None) -> None:
        """One Adam step on rho for the hypergradient d l_1 / d lambda ([K]); with ``apply`` (0-dim bool on
        the device) False, rho and Adam's state stay as they are. No host synchronisation."""
        grad = self._raw_gradient(hypergrad)
        beta1, beta2 = self.betas
        with torch.no_grad():
            ok = torch.ones((), dtype=torch.bool, device=grad.device) if apply is None else apply
            step = self.step_count + ok.to(self.step_count.dtype)
            # torch.optim.Adam's single-tensor step, op for op (its Python floats are 0-dim tensors here).
            exp_avg = torch.lerp(self.exp_avg, grad, 1 - beta1)
            exp_avg_sq = torch.addcmul(self.exp_avg_sq * beta2, grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = torch.pow(1 - beta2**step, self._half)  # pow, not sqrt: Python's x ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            step_size = bias_correction1.new_full((), self.lr) / bias_correction1  # a true division, as in Python
            raw = self.raw + (exp_avg * -step_size) / denom
            self.step_count.copy_(step)
            self.exp_avg.copy_(torch.where(ok, exp_avg, self.exp_avg))
            self.exp_avg_sq.copy_(torch.where(ok, exp_avg_sq, self.exp_avg_sq))
            self.raw.copy_(torch.where(ok, raw, self.raw))

    # --- checkpoints ------------------------------------------------------------------------------------
    def optimizer_state_dict(self) -> dict:
        """Adam's state in ``torch.optim.Adam.state_dict()``'s format (one parameter, rho)."""
        group = {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": 0,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            "fused": None,
            "decoupled_weight_decay": False,
            "params": [0],
        }
        state = {
            0: {
                "step": self.step_count.detach().to("cpu", torch.float32),
                "exp_avg": self.exp_avg.detach().clone(),
                "exp_avg_sq": self.exp_avg_sq.detach().clone(),
            }
        }
        return {"state": state, "param_groups": [group]}

    def load(self, raw: Tensor, optimizer_state: dict) -> None:
        """Restore rho and Adam's state (:meth:`optimizer_state_dict`'s format, or a ``torch.optim.Adam``
        state dict of rho as older trainers saved it)."""
        groups = optimizer_state.get("param_groups") or [{}]
        group = groups[0]
        self.lr = float(group.get("lr", self.lr))
        self.betas = tuple(float(b) for b in group.get("betas", self.betas))
        self.eps = float(group.get("eps", self.eps))
        state = next(iter(optimizer_state.get("state", {}).values()), None)
        with torch.no_grad():
            self.raw.copy_(raw)
            if state is None:  # saved before the first outer update
                self.step_count.zero_()
                self.exp_avg.zero_()
                self.exp_avg_sq.zero_()
                return
            self.step_count.copy_(torch.as_tensor(state["step"]).to(torch.float64))
            self.exp_avg.copy_(state["exp_avg"])
            self.exp_avg_sq.copy_(state["exp_avg_sq"])
