"""Run checkpoints: the trainer's state, the batch streams' positions and the random streams, written
atomically (a crash never leaves a half-written checkpoint) and read with ``weights_only=True``."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from bfdkern.atomic import atomic_torch_save, describe_load_error

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "bfdkern.pretrain-checkpoint/1"


def random_states() -> dict:
    """Python's and NumPy's global random states as tensors and lists (the trainer keeps torch's)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": int(version), "state": list(mt), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }


def set_random_states(states: dict) -> None:
    """Inverse of :func:`random_states`."""
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))


def save_checkpoint(path: str | os.PathLike, trainer_state: dict, streams: dict, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, fsync, ``os.replace``).

    Args:
        trainer_state: :meth:`bfdkern.bilevel.BilevelTrainer.state_dict`.
        streams: name -> (epoch, batch) position of each batch stream after the last completed step.
        extra: more JSON-like values (numbers, strings, lists, dicts, tensors).
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "trainer": trainer_state,
        "streams": {name: [int(e), int(b)] for name, (e, b) in streams.items()},
        "random": random_states(),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); ValueError naming the file
    when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (nothing to resume)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, foreign globals
        raise ValueError(f"{path}: cannot be read as a checkpoint: {describe_load_error(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a bfdkern pretraining checkpoint (format {found!r}, expected {FORMAT!r})")
    return payload
