"""Run checkpoints: the trainer's state, the batch streams' positions and the random streams, written
atomically (a crash never leaves a half-written checkpoint) with a checksum of the whole payload, and read
with ``weights_only=True`` and validated (structure, types, finite weights and lambda, the checksum), so a
damaged checkpoint is one line naming the file and the field, never a traceback mid-resume."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from bfdkern.atomic import atomic_torch_save
from bfdkern.models.files import Fields, SavedFileError, check_tensors, torch_load, verify_checksum, with_checksum

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
    return atomic_torch_save(with_checksum(payload), path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``), validated: its checksum (when
    it has one: older checkpoints do not), the fields a resume reads, their types and shapes, and finite weights,
    optimiser state and lambda. Raises FileNotFoundError, or ValueError
    (:class:`~bfdkern.models.files.SavedFileError`) with one line naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (nothing to resume)")
    payload = torch_load(path, map_location, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise SavedFileError(f"{path}: not a bfdkern pretraining checkpoint (format {found!r}, expected {FORMAT!r})")
    verify_checksum(payload, path)
    check_payload(Fields(path, payload))
    return payload


def check_payload(fields: Fields) -> None:
    """Validate a loaded checkpoint payload's fields (see :func:`load_checkpoint`)."""
    fields.dict("trainer")
    fields.integer("trainer.steps", minimum=0)
    for name in ("model", "optimizer", "lambda_optimizer"):
        fields.dict(f"trainer.{name}")
    for key, value in fields.get("trainer.model").items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            fields.fail("trainer.model", f"expected parameter name -> tensor, got {key!r}")
    check_tensors(fields, "trainer.model", fields.get("trainer.model"))
    fields.dict("trainer.optimizer.state")
    if not isinstance(fields.get("trainer.optimizer.param_groups"), list):
        fields.fail("trainer.optimizer.param_groups", "expected a list")
    check_tensors(fields, "trainer.optimizer", fields.get("trainer.optimizer"))
    fields.dict("trainer.scheduler", optional=True)
    fields.tensor("trainer.lambda_raw", ndim=1)
    check_tensors(fields, "trainer.lambda_optimizer", fields.get("trainer.lambda_optimizer"))
    # The task names: the trainer's list, or its task spec's (a pretraining run has both; older checkpoints
    # the spec only); a spec present is checked either way.
    spec = fields.dict("trainer.spec", optional="tasks" in fields.get("trainer"))
    if spec is not None:
        tasks = fields.get("trainer.spec.tasks")
        if not isinstance(tasks, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) for t in tasks
        ):
            fields.fail("trainer.spec.tasks", "expected a list of tasks with names")
    if "tasks" in fields.get("trainer"):
        tasks = fields.get("trainer.tasks")
        if not isinstance(tasks, list) or not all(isinstance(name, str) for name in tasks):
            fields.fail("trainer.tasks", "expected a list of task names")
    if len(tasks) != fields.get("trainer.lambda_raw").shape[0]:
        fields.fail("trainer.lambda_raw", f"{fields.get('trainer.lambda_raw').shape[0]} weights for {len(tasks)} tasks")
    for name in ("rng_cpu", "rng_cuda"):
        rng = fields.get(f"trainer.{name}", None)
        if rng is not None and (not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8):
            fields.fail(f"trainer.{name}", "expected a uint8 random-state tensor")
    streams = fields.dict("streams")
    for name, position in streams.items():
        if not (
            isinstance(position, (list, tuple))
            and len(position) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in position)
        ):
            fields.fail(f"streams.{name}", f"expected [epoch, batch] (two integers >= 0), got {position!r}")
    fields.integer("random.python.version")
    state = fields.get("random.python.state")
    if not isinstance(state, list) or len(state) != 625 or not all(isinstance(v, int) for v in state):
        fields.fail("random.python.state", "expected Python's Mersenne Twister state (625 integers)")
    fields.string("random.numpy.kind", ("MT19937",))
    fields.tensor("random.numpy.keys", shape=(624,))
    fields.integer("random.numpy.pos", minimum=0)
    fields.integer("random.numpy.has_gauss", minimum=0)
    fields.number("random.numpy.cached")
    extra = fields.dict("extra")
    if extra.get("initial_lambdas") is not None:
        fields.numbers("extra.initial_lambdas", length=len(tasks))
    chance = extra.get("chance")
    if chance is not None and not (
        isinstance(chance, list)
        and len(chance) == len(tasks)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in chance)
    ):
        fields.fail("extra.chance", f"expected {len(tasks)} numbers (NaN where unknown) or None")
    if fields.dict("extra.identity", optional=True):
        for key in ("images", "steps_per_epoch", "total_steps"):
            fields.integer(f"extra.identity.{key}", minimum=0)
