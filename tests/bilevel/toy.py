"""Small float64 models, specs and batches for the bi-level tests (smooth activations, so finite
differences behave as their order predicts)."""

from __future__ import annotations

import torch
from torch import nn

from bfdkern.tasks import Task, TaskSpec
from tests.helpers import random_targets

SPEC = TaskSpec(
    (
        Task("rank", "ordinal", 1),
        Task("kind", "categorical", 3, gamma=2.0),
        Task("fake", "binary", 2, ("real", "fake"), outer=True),
        Task("region", "multilabel", 2, ("mouth", "eye")),
    )
)
"""Four tasks of every kind, one outer (K = 4, C = 8, J = 5)."""

WEIGHTS = torch.tensor([0.5, 1.25, 0.8, 1.7], dtype=torch.float64)
"""Non-uniform task weights."""


class MLP(nn.Module):
    def __init__(self, spec: TaskSpec = SPEC, d_in: int = 6, hidden: int = 12):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, spec.num_columns))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Conv + BatchNorm + SiLU + dropout + linear head."""

    def __init__(self, spec: TaskSpec = SPEC, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16, spec.num_columns),
        )

    def forward(self, x):
        return self.net(x)


def make_model(kind: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    model = (MLP if kind == "mlp" else CNN)(**kw).double()
    return model.train()


def make_batch(kind: str, seed: int, batch: int = 8, spec: TaskSpec = SPEC, missing: float = 0.2):
    """(inputs, targets) for the model kind; the outer task is always labelled."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 6) if kind == "mlp" else (batch, 3, 5, 5)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    y = random_targets(spec, batch, missing=missing, generator=g)
    for k in spec.outer_indices:
        cols = spec.target_columns(k)
        y[:, cols] = torch.randint(0, 2, (batch, 1), generator=g).to(y.dtype)
    return x, y
