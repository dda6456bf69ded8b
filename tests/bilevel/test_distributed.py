"""BilevelTrainer on torch.distributed (gloo, two CPU processes): two ranks with B/2 each take the
single-process step on B (hypergradient, lambda, theta), lambda and its Adam state are bitwise identical
on every rank, rank 0's checkpoint continues in one process, ``unroll`` is refused, a rank that raises
makes the other stop with a clear error within a bounded time, and a non-finite loss on one rank stops
every rank at the same flag read.

The equality test uses an MLP without BatchNorm or dropout and tasks whose losses are means over samples
(categorical, binary, multilabel; every label present): then the mean of the two halves' losses is the
loss on the whole batch. BatchNorm batch statistics and the in-batch ranking pairs are per rank.
"""

from __future__ import annotations

import io
import queue
import time
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bfdkern.bilevel import BilevelTrainer, get_mode
from bfdkern.bilevel.distributed import CollectiveError, check_sync_batchnorm
from tests.bilevel.toy import SPEC, make_batch, make_model

SPEC3 = SPEC.subset(["kind", "fake", "region"])
LAMBDA_INIT = torch.tensor([0.7, 1.0, 1.4], dtype=torch.float64)
BATCH, STEPS, WORLD = 8, 3, 2
JOIN_S = 60.0
"""Bound on a whole two-process scenario (start-up included); nothing waits longer."""
PG_TIMEOUT_S = 20.0
"""A collective waiting for a rank that is gone fails after this long at most."""

RUNS = {  # name -> trainer options; "ddp" wraps the model in DistributedDataParallel
    "fd": {"mode": "fd"},
    "jvp_ddp": {"mode": "jvp", "ddp": True},
    "fd_lagged": {"mode": "fd", "update_order": "lagged"},
}


def _batches(step: int):
    tr = make_batch("mlp", 100 + step, batch=BATCH, spec=SPEC3, missing=0.0)
    val = make_batch("mlp", 200 + step, batch=BATCH, spec=SPEC3, missing=0.0)
    return tr, val


def _share(batch, rank: int, world: int):
    n = batch[0].shape[0] // world
    return tuple(t[rank * n : (rank + 1) * n] for t in batch)


def _make_trainer(options: dict, distributed: bool | None = None):
    options = dict(options)
    ddp = options.pop("ddp", False)
    model = make_model("mlp", seed=0, spec=SPEC3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    return BilevelTrainer(
        model, SPEC3, opt, lambda_init=LAMBDA_INIT, lambda_lr=1e-2, distributed=distributed, **options
    )


def _trajectory(trainer, rank: int, world: int, steps: range):
    out = []
    for s in steps:
        tr, val = _batches(s)
        rec = trainer.step(_share(tr, rank, world), _share(val, rank, world))
        assert rec.skipped is None, rec.skipped
        out.append((rec.hypergrad.clone(), rec.lambdas.clone()))
    return out


def _lambda_state(trainer) -> list[torch.Tensor]:
    w = trainer.weights
    return [w.raw.detach().clone(), w.exp_avg.clone(), w.exp_avg_sq.clone(), w.step_count.reshape(1).clone()]


# --- the processes --------------------------------------------------------------------------------------
def _equal_scenario(rank: int, world: int, tmp: str) -> dict:
    results = {}
    for name, options in RUNS.items():
        trainer = _make_trainer(options)
        assert trainer.sync is not None and trainer.sync.world_size == world
        results[name] = {
            "trajectory": _trajectory(trainer, rank, world, range(STEPS)),
            "lambda_state": _lambda_state(trainer),
            "theta": trainer.layout.theta().clone(),
            "lambda_spread": trainer.sync.max_difference(torch.cat(_lambda_state(trainer)), "lambda"),
        }
    # rank 0 writes a checkpoint after two steps; the parent resumes it in one process
    trainer = _make_trainer(RUNS["fd"])
    _trajectory(trainer, rank, world, range(2))
    trainer.check()  # every rank: the flags of all ranks, before the first rank saves
    if rank == 0:
        torch.save(trainer.state_dict(), f"{tmp}/checkpoint.pt")
    dist.barrier()
    try:
        _make_trainer({"mode": "unroll"})
    except ValueError as exc:
        results["unroll_error"] = str(exc)
    return results


def _failure_scenario(rank: int, world: int, tmp: str) -> dict:
    """Rank 1 raises at once (a bad batch shape, found on the host): rank 0 waits in an all-reduce."""
    trainer = _make_trainer(RUNS["fd"])
    tr, val = _batches(0)
    trainer.step(_share(tr, rank, world), _share(val, rank, world))
    tr, val = _batches(1)
    x, y = _share(tr, rank, world)
    if rank == 1:
        y = y[:, :-1]  # one target column short: a ValueError on this rank only
    trainer.step((x, y), _share(val, rank, world))
    return {}


def _nan_scenario(rank: int, world: int, tmp: str) -> dict:
    """Rank 1's training loss is NaN at step 2 of 3; the device flags are read every 3 steps, over all
    ranks, so both ranks stop at the read with the same error naming step 2."""
    trainer = _make_trainer(RUNS["fd"] | {"check_every": 3})
    for step in range(3):
        tr, val = _batches(step)
        x, y = _share(tr, rank, world)
        if rank == 1 and step == 1:
            x = torch.full_like(x, float("nan"))
        trainer.step((x, y), _share(val, rank, world))
    return {}


SCENARIOS = {"equal": _equal_scenario, "failure": _failure_scenario, "nan": _nan_scenario}


def _worker(rank: int, world: int, tmp: str, scenario: str, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world, timeout=timedelta(seconds=PG_TIMEOUT_S)
    )
    try:
        payload = io.BytesIO()  # tensors as bytes: shared-memory handles die with this process
        torch.save(SCENARIOS[scenario](rank, world, tmp), payload)
        results.put((rank, "ok", payload.getvalue()))
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put((rank, type(exc).__name__, f"{exc}\n{traceback.format_exc()}"))
        return  # leave at once: the peers see this process's connections close
    dist.destroy_process_group()


def _launch(scenario: str, tmp_path) -> dict[int, tuple[str, object]]:
    """Run ``scenario`` on WORLD spawned processes; rank -> (status, payload). Never waits past JOIN_S."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, WORLD, str(tmp_path), scenario, results)) for r in range(WORLD)]
    for p in procs:
        p.start()
    out = {}
    try:
        deadline = time.monotonic() + JOIN_S
        while len(out) < WORLD and time.monotonic() < deadline:
            try:
                rank, status, payload = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if status == "ok":
                payload = torch.load(io.BytesIO(payload), weights_only=False)
            out[rank] = (status, payload)
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    return out


# --- the tests ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def equal_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    out = _launch("equal", tmp)
    assert sorted(out) == list(range(WORLD)), f"ranks that reported: {sorted(out)} (a rank hung or died)"
    for rank, (status, payload) in out.items():
        assert status == "ok", f"rank {rank}: {status}: {payload}"
    return {rank: payload for rank, (_, payload) in out.items()}, tmp


@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_with_half_batches_match_one_process_with_the_whole_batch(equal_run, name):
    results, _ = equal_run
    single = _make_trainer(RUNS[name] | {"ddp": False}, distributed=False)
    expected = _trajectory(single, 0, 1, range(STEPS))
    for rank in range(WORLD):
        got = results[rank][name]["trajectory"]
        for step, ((hg, lam), (hg_ref, lam_ref)) in enumerate(zip(got, expected)):
            torch.testing.assert_close(hg, hg_ref, rtol=1e-9, atol=1e-14, msg=f"rank {rank} step {step} hypergradient")
            torch.testing.assert_close(lam, lam_ref, rtol=1e-12, atol=1e-14, msg=f"rank {rank} step {step} lambda")
        torch.testing.assert_close(results[rank][name]["theta"], single.layout.theta(), rtol=1e-10, atol=1e-13)
    assert not torch.equal(expected[-1][1], LAMBDA_INIT)  # lambda did move


@pytest.mark.parametrize("name", list(RUNS))
def test_lambda_and_its_adam_state_are_bitwise_identical_on_every_rank(equal_run, name):
    results, _ = equal_run
    first = results[0][name]
    for rank in range(1, WORLD):
        other = results[rank][name]
        for (_, lam0), (_, lam) in zip(first["trajectory"], other["trajectory"]):
            assert torch.equal(lam0, lam)
        for a, b in zip(first["lambda_state"], other["lambda_state"]):
            assert torch.equal(a, b)
        assert torch.equal(first["theta"], other["theta"])
    assert first["lambda_spread"] == 0.0


def test_rank_zero_checkpoint_resumes_in_one_process(equal_run):
    _, tmp = equal_run
    state = torch.load(tmp / "checkpoint.pt", weights_only=False)
    resumed = _make_trainer(RUNS["fd"], distributed=False)
    resumed.load_state_dict(state)
    ((hg, lam),) = _trajectory(resumed, 0, 1, range(2, 3))
    single = _make_trainer(RUNS["fd"], distributed=False)
    hg_ref, lam_ref = _trajectory(single, 0, 1, range(3))[-1]
    torch.testing.assert_close(hg, hg_ref, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(lam, lam_ref, rtol=1e-12, atol=1e-14)


def test_unroll_is_refused_under_distributed_with_a_pointer_to_jvp_and_fd(equal_run):
    results, _ = equal_run
    message = results[0].get("unroll_error", "")
    assert "unroll" in message and "jvp" in message and "fd" in message


def test_a_rank_that_raises_makes_the_other_stop_with_a_clear_error(tmp_path):
    out = _launch("failure", tmp_path)
    assert sorted(out) == [0, 1], f"ranks that reported: {sorted(out)} (a rank hung)"
    status1, message1 = out[1]
    assert status1 == "ValueError" and "training batch: targets must be [B, J=4]" in message1, message1
    status0, message0 = out[0]
    assert status0 == CollectiveError.__name__, message0
    assert "another rank has stopped or failed" in message0


def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_the_same_read(tmp_path):
    out = _launch("nan", tmp_path)
    assert sorted(out) == [0, 1], f"ranks that reported: {sorted(out)} (a rank hung)"
    for rank in (0, 1):
        status, message = out[rank]
        assert status == "FloatingPointError", (rank, message)
        assert message.startswith("step 2: the training loss is not finite for task(s)"), (rank, message)


def test_rank_shares_of_a_batch_stream_make_up_the_single_process_batches(tmp_path):
    from bfdkern.data import FaceDataset, make_loaders
    from bfdkern.data.simulator import simulate_collection
    from bfdkern.tasks import blades_spec
    from bfdkern.training import BatchStream

    simulate_collection(tmp_path, 12, seed=3, size=32, missing=0.1)
    loader = make_loaders(FaceDataset(tmp_path, blades_spec(), size=16, seed=5), batch_size=8)[0]
    whole = BatchStream(loader, epoch=0, batch=1)
    shares = [BatchStream(loader, epoch=0, batch=1, rank=r, world_size=2) for r in range(2)]
    for _ in range(4):  # across the epoch end (3 batches an epoch)
        x, y = whole.next()
        parts = [s.next() for s in shares]
        assert all(p[0].shape[0] == 4 for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]).nan_to_num(-1), y.nan_to_num(-1))
    assert shares[0].position == whole.position
    with pytest.raises(ValueError, match="whole pairs"):
        BatchStream(loader, rank=0, world_size=8)  # shares of one photo pair would split it


def test_sync_batchnorm_is_told_apart_and_its_limits_are_clear_errors():
    """SyncBatchNorm's autograd function admits no functorch transform: fd with sequential paired forwards
    only (the check runs in the trainer under torch.distributed; SyncBatchNorm itself syncs on GPUs only)."""
    plain = make_model("cnn")
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(make_model("cnn"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    fd, jvp = get_mode("fd"), get_mode("jvp")
    assert check_sync_batchnorm(plain, jvp, True) is False
    assert check_sync_batchnorm(synced, fd, None) is True
    assert check_sync_batchnorm(synced, fd, False) is True
    with pytest.raises(ValueError, match="mode='jvp' cannot differentiate through SyncBatchNorm"):
        check_sync_batchnorm(synced, jvp, None)
    with pytest.raises(ValueError, match="batched_pair=True cannot evaluate a model with SyncBatchNorm"):
        check_sync_batchnorm(synced, fd, True)
