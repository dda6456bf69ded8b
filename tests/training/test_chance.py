"""Chance levels: the loss of the best constant prediction, checked against a brute-force search and
against the zero-logit loss."""

import numpy as np
import pytest
import torch

from bfdkern.ops import reference
from bfdkern.tasks import Task, TaskSpec, blades_spec
from bfdkern.training import chance_losses
from bfdkern.training.chance import is_learned
from tests.helpers import random_targets

SPEC = TaskSpec((Task("iso", "ordinal", 1), Task("wb", "categorical", 3), Task("manipulated", "binary", 2, outer=True)))


def _batches(n_batches=4, b=16, seed=0):
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        t = SPEC.empty_targets(b, dtype=torch.float64)
        t[:, 0] = torch.from_numpy(g.integers(0, 4, b).astype(float))
        t[:, 1] = torch.from_numpy(g.choice(3, b, p=[0.7, 0.2, 0.1]).astype(float))
        t[:, 2] = torch.from_numpy((g.random(b) < 0.8).astype(float))
        t[g.random((b, 3)) < 0.1] = float("nan")
        out.append(t)
    return out


def _mean_loss(row, batches):
    return torch.stack([reference.per_task_losses(row.expand(t.shape[0], -1), t, SPEC) for t in batches]).mean(0)


def test_matches_a_brute_force_search_and_beats_zero_logits():
    batches = _batches()
    chance = chance_losses(batches, SPEC)
    at_zero = _mean_loss(torch.zeros(SPEC.num_columns, dtype=torch.float64), batches)
    # Ordinal: every constant score ties all pairs, so chance is the zero-logit loss.
    assert float(chance[0]) == pytest.approx(float(at_zero[0]), rel=1e-12)
    # Imbalanced classes: the prior beats uniform logits.
    assert chance[1] < at_zero[1] - 0.01 and chance[2] < at_zero[2] - 0.01
    # Binary: a 1-d grid over the logit difference finds nothing better.
    grid = torch.linspace(-4, 4, 801, dtype=torch.float64)
    binary = [float(_mean_loss(torch.tensor([0, 0, 0, 0, 0, d], dtype=torch.float64), batches)[2]) for d in grid]
    assert float(chance[2]) <= min(binary) + 1e-6
    assert float(chance[2]) == pytest.approx(min(binary), abs=1e-4)
    # Categorical: random constant logits never beat it.
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        row = torch.zeros(SPEC.num_columns, dtype=torch.float64)
        row[1:4] = torch.randn(3, generator=g, dtype=torch.float64) * 2
        assert float(chance[1]) <= float(_mean_loss(row, batches)[1]) + 1e-9


def test_a_task_without_labels_has_no_chance_level():
    batches = _batches()
    for t in batches:
        t[:, 1] = float("nan")
    chance = chance_losses(batches, SPEC)
    assert torch.isnan(chance[1]) and torch.isfinite(chance[[0, 2]]).all()


def test_blades_spec_and_bad_input():
    spec = blades_spec()
    g = torch.Generator().manual_seed(1)
    chance = chance_losses([random_targets(spec, 16, generator=g) for _ in range(3)], spec)
    assert chance.shape == (spec.num_tasks,) and torch.isfinite(chance).all() and (chance > 0).all()
    with pytest.raises(ValueError, match="at least one non-empty"):
        chance_losses([], spec)
    with pytest.raises(ValueError, match=r"\[B, J=12\]"):
        chance_losses([torch.zeros(4, 3)], spec)


def test_learned_means_clearly_below_chance():
    assert is_learned(0.94, 1.0) and not is_learned(0.96, 1.0) and not is_learned(1.2, 1.0)
    assert not is_learned(0.1, float("nan")) and not is_learned(float("nan"), 1.0)
