"""The trainer's settings as one frozen value, checked when made and stored whole in checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from bfdkern.bilevel.choices import MODES
from bfdkern.bilevel.precision import check_amp_dtype
from bfdkern.bilevel.weights import PARAMETRIZATIONS

UPDATE_ORDERS = ("paper", "lagged")


@dataclass(frozen=True)
class TrainerConfig:
    """How :class:`~bfdkern.bilevel.BilevelTrainer` trains (see its docstring for each setting).

    ``batched_pair`` and ``check_every`` are stored resolved (the trainer fills in the device defaults).
    """

    mode: str = "fd"
    parametrization: str = "raw"
    lambda_lr: float = 3e-4
    outer_every: int = 1
    radius: float = 0.01
    reuse_forward: bool = True
    update_order: str = "paper"
    batched_pair: bool | None = None
    amp_dtype: torch.dtype | None = None
    clip_grad_norm: float | None = None
    backend: str | None = None
    sync_timings: bool = False
    contiguous_params: bool = True
    check_every: int | None = None
    cuda_graph: bool | str = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"hypergradient mode must be one of {tuple(MODES)}, got {self.mode!r}")
        check_amp_dtype(self.amp_dtype)
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")
        if self.update_order not in UPDATE_ORDERS:
            raise ValueError(f"update_order must be one of {UPDATE_ORDERS}, got {self.update_order!r}")
        if int(self.outer_every) < 0:
            raise ValueError(f"outer_every must be >= 1, or 0 for a fixed lambda; got {self.outer_every}")
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")
        if not self.lambda_lr > 0:
            raise ValueError(f"lambda_lr must be > 0, got {self.lambda_lr}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm}")
        if self.check_every is not None and int(self.check_every) < 1:
            raise ValueError(
                f"check_every must be >= 1 (steps between reads of the device flags), got {self.check_every}"
            )
        if not (self.cuda_graph is True or self.cuda_graph is False or self.cuda_graph == "auto"):
            raise ValueError(f"cuda_graph must be False, True or 'auto', got {self.cuda_graph!r}")
        object.__setattr__(self, "outer_every", int(self.outer_every))
        object.__setattr__(self, "radius", float(self.radius))

    def to_dict(self) -> dict:
        """Plain values (the dtype as its name), for checkpoints."""
        out = dataclasses.asdict(self)
        out["amp_dtype"] = None if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")
        return out

    @classmethod
    def from_dict(cls, saved: dict) -> TrainerConfig:
        """The config of a checkpoint; settings it does not hold (older trainers saved six) keep their
        defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        if isinstance(values.get("amp_dtype"), str):
            values["amp_dtype"] = getattr(torch, values["amp_dtype"])
        return cls(**values)
