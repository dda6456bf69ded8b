"""A batch stream that knows its position, so a resumed run draws exactly the batches it would have drawn.

A loader from :func:`bfdkern.data.make_loaders` draws its epoch-``e`` order and samples from the seed alone
(:class:`bfdkern.data.StreamSampler`); :class:`BatchStream` counts (epoch, batch) and, on a fresh start or
on resume, asks the sampler for exactly the rest of that epoch.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


class BatchStream:
    """Batches of ``loader`` epoch after epoch from ``(epoch, batch)`` on.

    ``position`` is ``(epoch, batches of that epoch already handed out)``; a new stream built with that
    position continues with the very next batch. Starting an iterator does not consume the global torch
    random stream (the DataLoader draws its worker seed under :func:`torch.random.fork_rng`), so resuming
    leaves the training's random numbers unchanged.
    """

    def __init__(self, loader: DataLoader, epoch: int = 0, batch: int = 0):
        sampler = loader.sampler
        if not hasattr(sampler, "set_epoch") or not hasattr(sampler, "indices"):
            raise TypeError("BatchStream needs a loader from bfdkern.data.make_loaders (a StreamSampler)")
        self.loader = loader
        self.batch_size = int(loader.batch_size)
        self.batches_per_epoch = len(sampler.indices) // self.batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"{len(sampler.indices)} images are fewer than one batch of {self.batch_size}")
        self.epoch, self.batch = int(epoch), int(batch)
        if self.epoch < 0 or not 0 <= self.batch <= self.batches_per_epoch:
            raise ValueError(
                f"stream position (epoch {epoch}, batch {batch}) is outside an epoch of {self.batches_per_epoch} batches"
            )
        self._it = None

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batches of it handed out)."""
        return self.epoch, self.batch

    def next(self):
        """The next batch (crossing into the next epoch when this one is done)."""
        while True:
            if self.batch >= self.batches_per_epoch:
                self.epoch, self.batch, self._it = self.epoch + 1, 0, None
            if self._it is None:
                self.loader.sampler.set_epoch(self.epoch, start=self.batch * self.batch_size)
                with torch.random.fork_rng(devices=[]):
                    self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self.batch = self.batches_per_epoch
                continue
            self.batch += 1
            return batch

    def close(self) -> None:
        """Drop the iterator (and with it a non-persistent loader's workers)."""
        self._it = None
