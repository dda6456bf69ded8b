"""A batch stream that knows its position, so a resumed run draws exactly the batches it would have drawn.

A loader from :func:`bfdkern.data.make_loaders` draws its epoch-``e`` order and samples from the seed alone
(:class:`bfdkern.data.StreamSampler`). :class:`BatchStream` feeds the same keys, epoch after epoch, to one
DataLoader that lives as long as the stream, so its workers keep prefetching across epoch ends (a loader
restarted every epoch stalls while its workers make the first batches), and it counts (epoch, batch).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler


def keys_per_epoch(sampler) -> int:
    """Sample keys in one epoch of a StreamSampler (twice the images when it pairs originals and manipulations)."""
    return int(getattr(sampler, "keys_per_epoch", len(sampler.indices)))


class _EpochKeys(Sampler):
    """The keys of a :class:`bfdkern.data.StreamSampler` from (epoch, batch) on, epoch after epoch, without
    end; each epoch contributes only its full batches (the last partial one is dropped, as the loaders do).
    With ``world_size`` > 1, rank ``rank`` gets its contiguous share (batch_size / world_size keys) of every
    batch, so the ranks together see the single-process batches."""

    def __init__(self, sampler, batch_size: int, epoch: int, batch: int, rank: int = 0, world_size: int = 1):
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch, self.batch = epoch, batch
        self.full = (keys_per_epoch(sampler) // batch_size) * batch_size
        self.share = batch_size // world_size
        self.offset = rank * self.share

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch, start = self.epoch, self.batch * self.batch_size
        while True:
            self.sampler.set_epoch(epoch, start=start)
            keys = list(self.sampler)[: self.full - start]
            for b0 in range(0, len(keys), self.batch_size):
                yield from keys[b0 + self.offset : b0 + self.offset + self.share]
            epoch, start = epoch + 1, 0


class BatchStream:
    """Batches of ``loader``'s stream epoch after epoch from ``(epoch, batch)`` on.

    ``position`` is ``(epoch, batches of that epoch already handed out)``; a new stream built with that
    position continues with the very next batch. Under torch.distributed each rank builds the stream with its
    ``rank`` and ``world_size`` and draws its share of each batch; positions count whole batches, so a
    checkpoint continues with any number of ranks. Starting the stream does not consume the global torch
    random stream (the DataLoader draws its worker seed under :func:`torch.random.fork_rng`), so resuming
    leaves the training's random numbers unchanged.
    """

    def __init__(self, loader: DataLoader, epoch: int = 0, batch: int = 0, rank: int = 0, world_size: int = 1):
        sampler = loader.sampler
        if not hasattr(sampler, "set_epoch") or not hasattr(sampler, "indices"):
            raise TypeError("BatchStream needs a loader from bfdkern.data.make_loaders (a StreamSampler)")
        self.loader = loader
        self.batch_size = int(loader.batch_size)
        self.batches_per_epoch = keys_per_epoch(sampler) // self.batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{keys_per_epoch(sampler)} samples an epoch are fewer than one batch of {self.batch_size}"
            )
        self.epoch, self.batch = int(epoch), int(batch)
        if self.epoch < 0 or not 0 <= self.batch <= self.batches_per_epoch:
            raise ValueError(
                f"stream position (epoch {epoch}, batch {batch}) is outside an epoch of {self.batches_per_epoch} batches"
            )
        if self.batch_size % world_size or (getattr(sampler, "paired", False) and (self.batch_size // world_size) % 2):
            raise ValueError(
                f"batch size {self.batch_size} does not split into {world_size} equal shares"
                + (" of whole pairs (original, manipulated)" if getattr(sampler, "paired", False) else "")
                + "; choose a batch size that is a multiple of "
                + f"{world_size * (2 if getattr(sampler, 'paired', False) else 1)}"
            )
        self.rank, self.world_size = int(rank), int(world_size)
        self._keys = DataLoader(
            loader.dataset,
            batch_size=self.batch_size // world_size,
            sampler=_EpochKeys(sampler, self.batch_size, self.epoch, self.batch, rank, world_size),
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            collate_fn=loader.collate_fn,
        )
        self._it = None

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batches of it handed out)."""
        return self.epoch, self.batch

    def next(self):
        """The next batch (crossing into the next epoch when this one is done)."""
        if self._it is None:
            with torch.random.fork_rng(devices=[]):
                self._it = iter(self._keys)
        batch = next(self._it)
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        self.batch += 1
        return batch

    def close(self) -> None:
        """Stop the DataLoader iterator and its workers."""
        self._it = None
