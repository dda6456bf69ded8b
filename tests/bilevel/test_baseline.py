"""The research-code baseline of the benchmarks computes the same algorithm as the trainer: the
same lambda trajectory in float64 (models without dropout, so no random stream is involved)."""

import copy

import pytest
import torch

from benchmarks.baselines import research_bilevel_step
from bfdkern.bilevel import BilevelTrainer
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("reuse_forward", [True, False])
def test_same_lambda_trajectory_as_the_trainer(kind, reuse_forward):
    model = make_model(kind, dropout=0.0) if kind == "cnn" else make_model(kind)
    base_model = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    trainer = BilevelTrainer(model, SPEC, opt, lambda_init=WEIGHTS, lambda_lr=1e-2, reuse_forward=reuse_forward)

    base_opt = torch.optim.AdamW(base_model.parameters(), lr=0.05, weight_decay=0.01)
    lam = WEIGHTS.clone().requires_grad_(True)
    lam_opt = torch.optim.Adam([lam], lr=1e-2)

    for step in range(4):
        btr, bval = make_batch(kind, 2 * step), make_batch(kind, 2 * step + 1)
        record = trainer.step(btr, bval)
        hyper = research_bilevel_step(base_model, SPEC, lam, lam_opt, base_opt, btr, bval)
        torch.testing.assert_close(record.hypergrad, hyper, rtol=1e-7, atol=1e-14)
        torch.testing.assert_close(record.lambdas, lam.detach(), rtol=1e-10, atol=0)
    assert not torch.allclose(lam.detach(), WEIGHTS)
