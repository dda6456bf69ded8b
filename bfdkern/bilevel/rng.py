"""Random-stream snapshots, so an evaluation can replay the dropout masks of an earlier forward
without advancing the global random streams.

The paired evaluation and the forward-mode JVP must see the same dropout masks as the forward at
theta whose Jacobian they stand for, and must not shift the masks of later training steps.

While a CUDA graph is being captured there are no snapshots (a captured step holds no random ops; the
trainer refuses models with dropout there): :meth:`RngState.capture` returns None and :func:`replay` of
None does nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RngState:
    """The CPU generator state and, for a CUDA device, that device's generator state."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device | str) -> RngState | None:
        """Snapshot the streams a forward on ``device`` draws from (no host sync); None while a CUDA graph
        is being captured."""
        device = torch.device(device)
        if capturing(device):
            return None
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    def restore(self) -> None:
        """Set the global streams to this snapshot."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def capturing(device: torch.device) -> bool:
    """A CUDA graph is being captured on ``device``'s current stream."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


@contextlib.contextmanager
def replay(state: RngState | None, device: torch.device | str):
    """Run the block from ``state`` (or from the current state when None) and put the global
    streams back as they were afterwards."""
    device = torch.device(device)
    if capturing(device):
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        if state is not None:
            state.restore()
        yield
