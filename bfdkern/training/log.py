"""The per-step log of a run: ``RUN_DIR/log.csv`` (one row a step: per-task losses, lambda, the
hypergradient, lr, timings), always; and, with ``logger`` ``tensorboard`` or ``wandb``, the same scalars in
TensorBoard (``RUN_DIR/tensorboard``) or Weights & Biases. Both are optional packages: asking for one that
is not installed is an error before the run starts, never a silent omission."""

from __future__ import annotations

import contextlib
import csv
import math
import os
from pathlib import Path

import numpy as np

from bfdkern.atomic import disk_full_named
from bfdkern.tasks import TaskSpec

LOG_NAME = "log.csv"
TENSORBOARD_DIR = "tensorboard"
WANDB_ID_NAME = "wandb-id.txt"
"""The Weights & Biases run id, so that a resumed run continues the same W&B run."""


def log_fields(spec: TaskSpec) -> list[str]:
    """The CSV columns for ``spec``."""
    names = spec.names
    return (
        ["step", "epoch", "lr"]
        + [f"loss_{n}" for n in names]
        + [f"lambda_{n}" for n in names]
        + [f"hypergrad_{n}" for n in names]
        + ["outer_loss", "eps", "skipped", "step_s", "data_s"]
    )


def check_logger(logger: str) -> None:
    """ValueError, naming the package to install, when ``logger``'s package is missing (checked before a run
    writes anything)."""
    if logger == "tensorboard":
        try:
            # lazy: optional dependency (tensorboard)
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ValueError(
                "logger 'tensorboard' needs the tensorboard package (pip install tensorboard); or use logger 'csv'"
            ) from None
    elif logger == "wandb":
        try:
            # lazy: optional dependency (wandb)
            import wandb  # noqa: F401
        except ImportError:
            raise ValueError(
                "logger 'wandb' needs the wandb package (pip install wandb, then wandb login); or use logger "
                "'tensorboard' or 'csv'"
            ) from None
    elif logger != "csv":
        raise ValueError(f"logger must be csv, tensorboard or wandb, got {logger!r}")


class TensorBoardSink:
    """Scalars to ``folder`` as TensorBoard events; a resumed run purges the events after its checkpoint."""

    def __init__(self, folder: Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency (tensorboard)

        self.writer = SummaryWriter(str(folder), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Scalars to a Weights & Biases run named after the run folder (project ``$WANDB_PROJECT`` or
    ``bfdkern``); its id is kept in ``RUN_DIR/wandb-id.txt`` so a resumed run continues it."""

    def __init__(self, run_dir: Path, config: dict):
        import wandb  # lazy: optional dependency (wandb)

        id_path = run_dir / WANDB_ID_NAME
        run_id = id_path.read_text().strip() if id_path.is_file() else wandb.util.generate_id()
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "bfdkern"),
            name=run_dir.resolve().name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=config,
        )
        if not id_path.is_file():
            id_path.write_text(run_id + "\n")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def open_sink(logger: str, run_dir: str | os.PathLike, config: dict, resume_step: int = 0):
    """The scalar sink of ``logger`` (None for ``csv``: log.csv alone)."""
    check_logger(logger)
    if logger == "tensorboard":
        return TensorBoardSink(Path(run_dir) / TENSORBOARD_DIR, resume_step)
    if logger == "wandb":
        return WandbSink(Path(run_dir), config)
    return None


class StepLog:
    """Appends one row a step to ``RUN_DIR/log.csv``, and the same scalars to ``sink`` (see :func:`open_sink`).

    On resume (``resume_step`` given) rows after that step (written after the last checkpoint by a run that
    then died) are dropped first, so the log always matches the model state. A full disk is a
    :class:`~bfdkern.atomic.DiskFull` naming the log.
    """

    def __init__(self, run_dir: str | os.PathLike, spec: TaskSpec, resume_step: int | None = None, sink=None):
        self.path = Path(run_dir) / LOG_NAME
        self.spec = spec
        self.fields = log_fields(spec)
        with disk_full_named(self.path):
            if resume_step is not None and self.path.is_file():
                self._truncate(int(resume_step))
            new = not self.path.is_file() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="")  # noqa: SIM115 - open for the life of the run
            self._writer = csv.DictWriter(self._file, fieldnames=self.fields)
            if new:
                self._writer.writeheader()
                self._file.flush()
        self._sink = sink

    def _truncate(self, step: int) -> None:
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != self.fields:
                raise ValueError(f"{self.path}: columns {reader.fieldnames} do not match this run's tasks")
            rows = [r for r in reader if int(r["step"]) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def write(self, record, epoch: int, lr: float, data_s: float) -> None:
        """One row from a :class:`bfdkern.bilevel.StepRecord`."""
        names = self.spec.names
        row = {"step": record.step, "epoch": epoch, "lr": f"{lr:.6g}"}
        row.update({f"loss_{n}": f"{v:.6g}" for n, v in zip(names, record.per_task.tolist())})
        row.update({f"lambda_{n}": f"{v:.8g}" for n, v in zip(names, record.lambdas.tolist())})
        hyper = record.hypergrad.tolist() if record.hypergrad is not None else [""] * len(names)
        row.update({f"hypergrad_{n}": (f"{v:.6g}" if v != "" else "") for n, v in zip(names, hyper)})
        row["outer_loss"] = "" if record.outer_loss is None else f"{record.outer_loss:.6g}"
        row["eps"] = "" if record.eps is None else f"{record.eps:.6g}"
        row["skipped"] = record.skipped or ""
        row["step_s"] = f"{record.timings.get('total', math.nan):.4f}"
        row["data_s"] = f"{data_s:.4f}"
        with disk_full_named(self.path):
            self._writer.writerow(row)
            self._file.flush()
        if self._sink is not None:
            scalars = {f"loss/{n}": v for n, v in zip(names, record.per_task.tolist())}
            scalars.update({f"lambda/{n}": v for n, v in zip(names, record.lambdas.tolist())})
            if record.hypergrad is not None:
                scalars.update({f"hypergrad/{n}": v for n, v in zip(names, record.hypergrad.tolist())})
            if record.outer_loss is not None:
                scalars["outer_loss"] = record.outer_loss
            scalars.update({"lr": lr, "epoch": epoch, "time/step_s": record.timings.get("total", math.nan)})
            scalars["time/data_s"] = data_s
            self._sink.write(record.step, scalars)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the last flush on a full disk: the row was already reported
            self._file.close()
        if self._sink is not None:
            self._sink.close()


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a ``log.csv`` (a run directory or the file) as float arrays (empty cells are NaN;
    ``skipped`` stays text)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        names = reader.fieldnames or []
    out: dict[str, np.ndarray] = {}
    for name in names:
        values = [r[name] for r in rows]
        if name == "skipped":
            out[name] = np.array(values, dtype=object)
        else:
            out[name] = np.array([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
    return out
