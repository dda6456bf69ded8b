"""The bi-level step on ``torch.distributed``: what is averaged over the ranks, and how.

Each rank holds a replica of theta and lambda and its own share of B_tr and B_val (B / world size
samples each). The step is the single-process step on the whole batch when every per-task loss is a
mean over samples (equal shares, every label present), because each rank's contribution enters through
an average, as in DistributedDataParallel:

* step 1: the virtual-step gradient g (flat [N] buffer) is averaged (one all-reduce of N values);
* step 2: v is averaged (N values), so ||v|| and eps = r / ||v|| are global and identical on every rank;
* step 3: ``fd`` averages only the per-task loss vectors L(theta+), L(theta-) ([2, K]: 2K numbers);
  ``jvp`` averages J v ([K]); ``unroll`` is refused (double backward through DDP is unsupported
  upstream; use ``jvp``, exact, or ``fd``);
* step 4: lambda's Adam step runs on every rank on the same averaged hypergradient, so lambda and its
  Adam state stay bitwise identical without communication;
* step 5: the real update's gradient is averaged (N values); the ``lagged`` order reuses step 1's
  averaged g and sends nothing more.

The all-reduces are explicit, one call per flat buffer (the trainer keeps g and v in flat buffers), in
place of DDP's bucketed hooks: the forwards at theta' and theta+- are functional calls, which DDP's
reducer does not see. A model wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` is accepted
and unwrapped (its process group is used). Rank-local, not averaged: the records' ``per_task`` and
``outer_loss``, BatchNorm batch statistics (use SyncBatchNorm for global ones), and the losses that pair
samples (the ordinal ranking pairs only samples of the same rank's batch).

Parameters and buffers are broadcast from the group's first rank when the trainer is built, and buffers
(BatchNorm running statistics) again before every step, as DDP does.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

UNROLL_ERROR = (
    "mode='unroll' is not available under torch.distributed: it needs a double backward through the "
    "distributed gradient all-reduce, which DistributedDataParallel does not support; use mode='jvp' (exact, "
    "one forward-mode pass) or mode='fd' (the paper's finite difference)"
)


def check_sync_batchnorm(model: nn.Module, mode, batched_pair: bool | None) -> bool:
    """Whether the (distributed) model holds SyncBatchNorm layers, which synchronise their batch statistics
    through an autograd function that functorch transforms and double backward cannot enter: a ValueError
    for a ``mode`` (a :class:`~bfdkern.bilevel.modes.HypergradientMode`) that differentiates through the model
    by forward mode or twice, and for an explicitly batched (vmapped) paired evaluation."""
    if not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return False
    if mode.forward_mode or mode.differentiates_inner_gradient:
        raise ValueError(
            f"mode={mode.name!r} cannot differentiate through SyncBatchNorm (its autograd function has no "
            "forward-mode rule and no double backward); use mode='fd', or plain BatchNorm"
        )
    if batched_pair:
        raise ValueError(
            "batched_pair=True cannot evaluate a model with SyncBatchNorm (its collectives cannot run under "
            "vmap); leave batched_pair unset (the two sides then run one after the other)"
        )
    return True


class CollectiveError(RuntimeError):
    """A collective failed: another rank stopped, raised or lost its connection."""


class DistributedSync:
    """Averages the bi-level step's tensors over the ranks of a process group.

    Args:
        group: the process group (None: the default group, which must be initialised).
    """

    def __init__(self, group: dist.ProcessGroup | None = None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "torch.distributed is not initialised: call torch.distributed.init_process_group first "
                "(torchrun sets the environment for it), or train without distributed"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.src = dist.get_global_rank(group, 0) if group is not None else 0
        self.calls = 0

    def _run(self, op, what: str):
        self.calls += 1
        try:
            return op()
        except (RuntimeError, dist.DistBackendError) as exc:  # DistBackendError is a RuntimeError; listed for clarity
            raise CollectiveError(
                f"rank {self.rank} of {self.world_size}: the all-reduce of {what} failed, so another rank has "
                f"stopped or failed (see its error); this rank stops too. Cause: {exc}"
            ) from exc

    def average_(self, tensor: Tensor, what: str) -> Tensor:
        """Replace ``tensor`` (any shape) in place by its mean over the ranks (identical on all of them)."""
        self._run(lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group), what)
        if self.world_size > 1:
            tensor.div_(self.world_size)
        return tensor

    def reduce_(self, tensor: Tensor, op: str, what: str) -> Tensor:
        """Replace ``tensor`` in place by its elementwise ``min`` or ``max`` over the ranks."""
        reduce_op = {"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op]
        self._run(lambda: dist.all_reduce(tensor, op=reduce_op, group=self.group), what)
        return tensor

    def average_list_(self, tensors: list[Tensor], what: str) -> None:
        """Average several tensors in one all-reduce (coalesced through one flat copy per dtype)."""
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            self.average_(flat, what)
            offset = 0
            with torch.no_grad():
                for t in group:
                    t.copy_(flat[offset : offset + t.numel()].view_as(t))
                    offset += t.numel()

    def broadcast_(self, tensors, what: str) -> None:
        """Overwrite ``tensors`` with the first rank's values."""
        for t in tensors:
            self._run(lambda t=t: dist.broadcast(t, src=self.src, group=self.group), what)

    def broadcast_buffers_(self, model: nn.Module) -> None:
        """The model's buffers (BatchNorm running statistics) from the first rank."""
        with torch.no_grad():
            self.broadcast_([b for b in model.buffers()], "the model's buffers")

    def max_difference(self, tensor: Tensor, what: str) -> float:
        """max over ranks minus min over ranks of ``tensor``'s entries (0.0 where every rank agrees); for
        checks that replicas stay identical (two small all-reduces)."""
        hi = tensor.detach().clone().to(torch.float64)
        lo = -hi
        self._run(lambda: dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=self.group), what)
        self._run(lambda: dist.all_reduce(lo, op=dist.ReduceOp.MAX, group=self.group), what)
        return float((hi + lo).abs().max()) if hi.numel() else 0.0


def unwrap(model: nn.Module) -> tuple[nn.Module, dist.ProcessGroup | None, bool]:
    """(module, process group, was_wrapped): a DistributedDataParallel model's inner module and its group."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module, model.process_group, True
    return model, None, False


def sync_for(model: nn.Module, distributed: bool | None) -> tuple[nn.Module, DistributedSync | None]:
    """The module to train and the sync to use: ``distributed`` None = on when the model is DDP-wrapped or
    torch.distributed is initialised with more than one rank; True = required; False = off."""
    module, group, wrapped = unwrap(model)
    initialised = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = wrapped or (initialised and dist.get_world_size() > 1)
    if not distributed:
        if wrapped:
            raise ValueError("the model is wrapped in DistributedDataParallel but distributed=False")
        return module, None
    return module, DistributedSync(group)


def environment_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_environment(device: str | None = None, timeout_s: float = 600.0) -> DistributedSync | None:
    """Under torchrun (WORLD_SIZE > 1): initialise the default process group (NCCL for CUDA, gloo for the
    CPU) and pin this process to GPU LOCAL_RANK; None when not launched for several processes.

    Args:
        device: the run's device ("cuda", "cpu" or None = CUDA when available).
        timeout_s: how long a collective waits for a rank that stopped before it fails (seconds).

    Returns:
        the sync (None without torchrun); use :func:`rank_device` for this rank's device.
    """
    if environment_world_size() <= 1:
        return None
    if not dist.is_initialized():
        use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return DistributedSync()


def rank_device(device: str | None) -> str | None:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun (one GPU a process); other devices unchanged."""
    resolved = device or ("cuda" if torch.cuda.is_available() else None)
    if resolved == "cuda" and environment_world_size() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def is_main_process() -> bool:
    """True on the first rank (or without torch.distributed): the rank that logs and writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
