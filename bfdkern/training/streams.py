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
    end; each epoch contributes only its full batches (the last partial one is dropped, as the loaders do)."""

    def __init__(self, sampler, batch_size: int, epoch: int, batch: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch, self.batch = epoch, batch
        self.full = (keys_per_epoch(sampler) // batch_size) * batch_size

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch, start = self.epoch, self.batch * self.batch_size
        while True:
            self.sampler.set_epoch(epoch, start=start)
            keys = list(self.sampler)
            yield from keys[: self.full - start]
            epoch, start = epoch + 1, 0


class BatchStream:
    """Batches of ``loader``'s stream epoch after epoch from ``(epoch, batch)`` on.

    ``position`` is ``(epoch, batches of that epoch already handed out)``; a new stream built with that
    position continues with the very next batch. Starting the stream does not consume the global torch
    random stream (the DataLoader draws its worker seed under :func:`torch.random.fork_rng`), so resuming
    leaves the training's random numbers unchanged.
    """

    def __init__(self, loader: DataLoader, epoch: int = 0, batch: int = 0):
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
        self._keys = DataLoader(
            loader.dataset,
            batch_size=self.batch_size,
            sampler=_EpochKeys(sampler, self.batch_size, self.epoch, self.batch),
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
