"""A training step reads nothing back from the device: every Python-level way a tensor's value reaches the
host (``item``, ``tolist``, ``bool``/``float``/``int``/``index`` conversions, ``cpu``, ``numpy``,
``nonzero``, boolean-mask indexing, ``equal``/``allclose``, ``unique``, ...) is counted during steps, and
there are none, in every mode and update order; the device flags are read once every ``check_every``
steps. (On a GPU, ``torch.cuda.set_sync_debug_mode("error")`` around a step is the same check by the
driver: the ``cuda`` test.)"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch

from bfdkern.bilevel import BilevelTrainer
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model

_BOTH = ("nonzero", "equal", "allclose", "is_nonzero", "masked_select", "unique", "unique_consecutive", "argwhere")
HOST_READS = {
    torch.Tensor: (
        "item",
        "tolist",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__complex__",
        "__array__",
        "cpu",
        "numpy",
        "nonzero_static",
        *_BOTH,
    ),
    torch: _BOTH,
}
"""The Python-level ways a tensor's value reaches the host (besides boolean-mask indexing)."""


def _is_mask(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@contextlib.contextmanager
def count_host_reads(exempt=()):
    """Count the calls that bring a tensor's value to the host; ``exempt``: tensors whose reads are fine
    (host-side counters). Yields the list of (name, tensor shape) of the counted calls."""
    calls: list[tuple[str, tuple]] = []
    exempt_ids = {id(t) for t in exempt}
    saved = []

    def wrap(owner, name, original):
        @functools.wraps(original)
        def counted(*args, **kwargs):
            first = args[0] if args else None
            if not (isinstance(first, torch.Tensor) and id(first) in exempt_ids):
                calls.append((name, tuple(first.shape) if isinstance(first, torch.Tensor) else ()))
            return original(*args, **kwargs)

        return counted

    def wrap_index(name, original):
        @functools.wraps(original)
        def indexed(self, index, *rest):
            if _is_mask(index):
                calls.append((f"{name} with a boolean mask", tuple(self.shape)))
            return original(self, index, *rest)

        return indexed

    for owner, names in HOST_READS.items():
        for name in dict.fromkeys(names):
            original = getattr(owner, name)
            saved.append((owner, name, original))
            setattr(owner, name, wrap(owner, name, original))
    for name in ("__getitem__", "__setitem__"):
        original = getattr(torch.Tensor, name)
        saved.append((torch.Tensor, name, original))
        setattr(torch.Tensor, name, wrap_index(name, original))
    try:
        yield calls
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


CASES = {
    "fd": {"mode": "fd"},
    "fd_lagged": {"mode": "fd", "update_order": "lagged"},
    "fd_fresh_forward_batched": {"mode": "fd", "reuse_forward": False, "batched_pair": True},
    "jvp": {"mode": "jvp"},
    "jvp_softplus_clipped": {"mode": "jvp", "parametrization": "softplus", "clip_grad_norm": 1.0},
    "unroll": {"mode": "unroll"},
    "plain_steps_between": {"mode": "fd", "outer_every": 2},
    "fixed_lambda": {"mode": "fd", "outer_every": 0},
}


def _trainer(case: str, optimizer: str = "sgd", check_every: int = 1000):
    model = make_model("cnn")  # BatchNorm and dropout (random-state snapshots every step)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    return BilevelTrainer(model, SPEC, opt, lambda_init=WEIGHTS, lambda_lr=1e-2, check_every=check_every, **CASES[case])


def _batches(step: int):
    return make_batch("cnn", 10 + step), make_batch("cnn", 50 + step)


@pytest.mark.parametrize("case", list(CASES))
def test_a_step_reads_nothing_from_the_device(case):
    trainer = _trainer(case)
    trainer.step(*_batches(0))  # first step: workspaces and flag buffers are allocated (still no reads)
    with count_host_reads() as calls:
        for step in range(1, 5):
            trainer.step(*_batches(step))
    assert calls == []


def test_adamw_reads_only_its_own_host_side_step_counters():
    """A non-capturable AdamW keeps its step count in a CPU tensor and reads it (no device to wait for);
    with capturable=True on a GPU that count lives on the device too."""
    trainer = _trainer("fd", optimizer="adamw")
    trainer.step(*_batches(0))
    counters = [s["step"] for s in trainer.optimizer.state.values()]
    with count_host_reads(exempt=counters) as calls:
        for step in range(1, 4):
            trainer.step(*_batches(step))
    assert calls == []


def test_the_device_flags_are_read_once_every_check_every_steps():
    trainer = _trainer("fd", check_every=3)
    reads = []
    for step in range(6):
        with count_host_reads() as calls:
            trainer.step(*_batches(step))
        reads.append(len(calls))
    assert reads == [0, 0, 1, 0, 0, 1]  # one transfer of all flags at steps 3 and 6
    with count_host_reads() as calls:
        trainer.state_dict()  # and before a checkpoint
    assert [name for name, _ in calls] == ["tolist"]


def test_the_counter_sees_a_host_read():
    """The instrument works: the calls a step used to make are counted."""
    x = torch.ones(3)
    with count_host_reads() as calls:
        float(x.sum())
        bool((x > 0).any())
        x.tolist()
        _ = x[x > 0]
    assert [name for name, _ in calls] == ["__float__", "__bool__", "tolist", "__getitem__ with a boolean mask"]


@pytest.mark.cuda
@pytest.mark.parametrize("case", ["fd", "fd_lagged", "jvp"])
def test_a_cuda_step_passes_sync_debug_mode_error(case):
    model = make_model("cnn", dropout=0.0).float().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01, capturable=True)
    trainer = BilevelTrainer(model, SPEC, opt, lambda_init=WEIGHTS.float(), check_every=1000, **CASES[case])
    batches = [tuple(t.float().cuda() for t in b) for b in _batches(0)]
    trainer.step(*batches)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.step(*batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.check()
