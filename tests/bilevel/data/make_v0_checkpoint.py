"""Writes ``trainer_v0.pt``: a BilevelTrainer checkpoint in the format of the trainer before the general
engine (commit 1461d49), and what that trainer did in the two steps after it, for
``tests/bilevel/test_checkpoint_compat.py``. Run it in a checkout of that commit:

    git worktree add /tmp/v0 1461d49 && cd /tmp/v0 && PYTHONPATH=$PWD python3 /path/to/make_v0_checkpoint.py OUT
"""

import io
import sys

import torch

from bfdkern.bilevel import BilevelTrainer
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model


def main(out: str) -> None:
    torch.manual_seed(21)
    model = make_model("cnn", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    trainer = BilevelTrainer(
        model, SPEC, opt, sched, lambda_init=WEIGHTS, lambda_lr=1e-2, parametrization="softplus", mode="jvp"
    )
    btr, bval = make_batch("cnn", 1), make_batch("cnn", 2)
    for _ in range(2):
        trainer.step(btr, bval)
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    lambdas = [trainer.step(btr, bval).lambdas for _ in range(2)]
    torch.save(
        {
            "state": buf.getvalue(),
            "lambdas_after": torch.stack(lambdas),
            "params_after": [p.detach().clone() for p in model.parameters()],
        },
        out,
    )


if __name__ == "__main__":
    main(sys.argv[1])
