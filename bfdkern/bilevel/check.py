"""The double-backward check: the three hypergradient estimates side by side.

``unroll`` (double backward through the virtual step) and ``jvp`` (forward mode) are exact and
agree to rounding; ``fd`` carries an O(eps^2) truncation error (plus rounding that grows as eps
shrinks). A relative error of ``jvp`` against ``unroll`` well above rounding (about 1e-6 in
float32, 1e-12 in float64) means the model is not what the hypergradient assumes: e.g. a
forward that is not a function of its parameters and inputs alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bfdkern.bilevel.hypergradient import MODES, hypergradient


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    """||estimate - reference|| / ||reference|| (absolute error when the reference is 0)."""
    diff = torch.linalg.vector_norm((estimate - reference).double())
    ref = torch.linalg.vector_norm(reference.double())
    return float(diff / ref) if float(ref) > 0 else float(diff)


@dataclass(frozen=True)
class HypergradCheck:
    """The estimates ([K] each, d l_1(theta') / d lambda) and their relative errors.

    Attributes:
        fd, jvp, unroll: the three estimates.
        relative_errors: ``fd`` and ``jvp`` against ``unroll``, and ``fd_vs_jvp``.
        eps: the finite-difference step r / ||v||.
    """

    fd: Tensor
    jvp: Tensor
    unroll: Tensor
    relative_errors: dict[str, float]
    eps: float

    def __str__(self) -> str:
        errs = ", ".join(f"{k} {v:.2e}" for k, v in self.relative_errors.items())
        return f"hypergradient check (eps = {self.eps:.3g}): relative errors {errs}"


def check_hypergrad(
    model: nn.Module,
    spec,
    batch_tr,
    batch_val,
    weights: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    radius: float = 0.01,
    batched: bool = True,
    amp_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> HypergradCheck:
    """All three modes at the same theta, lambda, batches and dropout masks (the model, its
    buffers and the random streams are left untouched; see :func:`hypergradient` for the args;
    ``spec`` is a TaskSpec or an Objective)."""
    estimates = {
        mode: hypergradient(
            model,
            spec,
            batch_tr,
            batch_val,
            weights,
            optimizer,
            mode=mode,
            radius=radius,
            batched=batched,
            amp_dtype=amp_dtype,
            backend=backend,
        )
        for mode in MODES
    }
    eps = float(estimates["fd"].eps)
    estimates = {mode: hg.value.detach() for mode, hg in estimates.items()}
    errors = {
        "fd": relative_error(estimates["fd"], estimates["unroll"]),
        "jvp": relative_error(estimates["jvp"], estimates["unroll"]),
        "fd_vs_jvp": relative_error(estimates["fd"], estimates["jvp"]),
    }
    return HypergradCheck(estimates["fd"], estimates["jvp"], estimates["unroll"], errors, eps)
