"""The per-step log of a run: ``RUN_DIR/log.csv`` (one row a step: per-task losses, lambda, the
hypergradient, lr, timings), and TensorBoard scalars when the ``tensorboard`` package is installed."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from bfdkern.tasks import TaskSpec

LOG_NAME = "log.csv"


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


class StepLog:
    """Appends one row a step to ``RUN_DIR/log.csv``.

    On resume (``resume_step`` given) rows after that step (written after the last checkpoint by a run that
    then died) are dropped first, so the log always matches the model state.
    """

    def __init__(
        self, run_dir: str | os.PathLike, spec: TaskSpec, resume_step: int | None = None, tensorboard: bool = True
    ):
        self.path = Path(run_dir) / LOG_NAME
        self.spec = spec
        self.fields = log_fields(spec)
        if resume_step is not None and self.path.is_file():
            self._truncate(int(resume_step))
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 - open for the life of the run
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields)
        if new:
            self._writer.writeheader()
            self._file.flush()
        self._tb = _summary_writer(Path(run_dir) / "tensorboard") if tensorboard else None

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
        self._writer.writerow(row)
        self._file.flush()
        if self._tb is not None:
            for n, v in zip(names, record.per_task.tolist()):
                self._tb.add_scalar(f"loss/{n}", v, record.step)
            for n, v in zip(names, record.lambdas.tolist()):
                self._tb.add_scalar(f"lambda/{n}", v, record.step)
            self._tb.add_scalar("lr", lr, record.step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


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


def _summary_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: the CSV log holds everything
        return None
    return SummaryWriter(str(folder))
