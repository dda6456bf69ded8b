"""On a GPU the trainer computes what it computes on the CPU (float64), and the paired
evaluation leaves the CUDA random stream untouched."""

import copy

import pytest
import torch

from bfdkern.bilevel import BilevelTrainer
from bfdkern.bilevel.paired_eval import paired_losses
from bfdkern.bilevel.params import ParamLayout
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["fd", "jvp", "unroll"])
def test_cuda_step_matches_cpu(mode):
    model = make_model("cnn", dropout=0.0)
    btr, bval = make_batch("cnn", 1), make_batch("cnn", 2)
    records = {}
    for device in ("cpu", "cuda"):
        m = copy.deepcopy(model).to(device)
        opt = torch.optim.AdamW(m.parameters(), lr=0.05, weight_decay=0.01)
        trainer = BilevelTrainer(m, SPEC, opt, mode=mode, lambda_init=WEIGHTS, lambda_lr=1e-2)
        records[device] = [trainer.step(btr, bval) for _ in range(2)]
    for a, b in zip(records["cpu"], records["cuda"]):
        torch.testing.assert_close(b.hypergrad.cpu(), a.hypergrad, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(b.lambdas.cpu(), a.lambdas, rtol=1e-9, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("batched", [True, False])
def test_cuda_paired_eval_leaves_the_cuda_stream_untouched(batched):
    model = make_model("cnn").cuda()
    layout = ParamLayout.from_model(model)
    x, y = (t.cuda() for t in make_batch("cnn", 3))
    theta = layout.flatten()
    state = torch.cuda.get_rng_state()
    losses = paired_losses(model, SPEC, layout, torch.stack([theta, theta]), (x, y), batched=batched)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert torch.equal(losses[0], losses[1])
