"""`bfdkern pretrain ARGS` that stops at a chosen moment and waits there to be killed (the kill tests send it
SIGKILL at that moment).

    python -m tests.training.paused_pretrain MOMENT ARGS...

MOMENT: ``scan`` (while the images are being checked, before anything is written), ``step:N`` (before step N),
``checkpoint:N`` (halfway through writing the N-th checkpoint: half its bytes are in the temporary file). The
process prints ``PAUSED`` on stdout when it stops.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path


def _pause() -> None:
    print("PAUSED", flush=True)
    time.sleep(600)
    raise SystemExit("never killed")


def _pause_at(moment: str) -> None:
    kind, _, n = moment.partition(":")
    if kind == "scan":
        from bfdkern.data.dataset import FaceDataset

        FaceDataset.__init__ = lambda self, *args, **kwargs: _pause()
    elif kind == "step":
        from bfdkern.bilevel.trainer import BilevelTrainer

        step = BilevelTrainer.step

        def paused_step(self, *args, **kwargs):
            if self.steps + 1 == int(n):
                _pause()
            return step(self, *args, **kwargs)

        BilevelTrainer.step = paused_step
    elif kind == "checkpoint":
        import torch

        save, calls = torch.save, []

        def target(f) -> str:  # the writer gets an open file: its path is in /proc
            return os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else str(f)

        def half_save(obj, f, *args, **kwargs):
            if Path(target(f)).name.startswith("checkpoint.pt"):
                calls.append(f)
                if len(calls) == int(n):
                    buffer = io.BytesIO()
                    save(obj, buffer, *args, **kwargs)
                    data = buffer.getvalue()
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    _pause()
            return save(obj, f, *args, **kwargs)

        torch.save = half_save
    else:
        raise SystemExit(f"unknown moment {moment!r}")


if __name__ == "__main__":
    _pause_at(sys.argv[1])
    from bfdkern.cli import main

    sys.exit(main(["pretrain", *sys.argv[2:]]))
