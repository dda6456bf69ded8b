"""EXIF values -> pretext labels -> rows of the targets tensor of a :class:`~bfdkern.tasks.TaskSpec`.

A label is what the manifest stores per task: the ordinal value in its unit (f-number, seconds,
mm, ISO) as a float, or the class name of a categorical task. :func:`targets` turns labels into the
``[N, J]`` targets layout of :mod:`bfdkern.tasks`: ordinal tasks get the raw value (or, with
:class:`QuantileBins`, the level 0..L-1), categorical tasks the class index, everything else NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from bfdkern.exif import vocab
from bfdkern.exif.parse import CATEGORICAL_SOURCES, ORDINAL_SOURCES, TagValue
from bfdkern.tasks import MISSING, TaskSpec

Label = float | str | None

TASKS: tuple[str, ...] = tuple(ORDINAL_SOURCES) + tuple(CATEGORICAL_SOURCES)
"""The nine EXIF tasks in the order of the default spec."""


def label_of(task: str, tag_value: TagValue) -> tuple[Label, str | None]:
    """(label, reason) of one task's parsed value: ordinal -> float in its unit; ``make`` -> the
    canonical make; an enumeration -> its class name, or None with reason ``nonstandard_code``."""
    if not tag_value.ok:
        return None, tag_value.reason
    if task in ORDINAL_SOURCES:
        return float(tag_value.value), None
    if task == "make":
        return vocab.canonical_make(tag_value.value), None
    name = vocab.class_of_code(task, tag_value.value)
    return (name, None) if name is not None else (None, "nonstandard_code")


def labels_of(values: Mapping[str, TagValue]) -> tuple[dict[str, Label], dict[str, str | None]]:
    """(labels, reasons) for every task in ``values`` (the output of :func:`bfdkern.exif.parse.parse_tags`)."""
    labels, reasons = {}, {}
    for task, tag_value in values.items():
        labels[task], reasons[task] = label_of(task, tag_value)
    return labels, reasons


class QuantileBins:
    """Bins each ordinal task into L levels at quantiles fitted on a training collection.

    The level of a value is the number of edges <= value (level ``l`` holds
    ``edge[l-1] <= v < edge[l]``): equal values share a level and the order is kept. Heavily tied
    values (ISO 100) can give equal edges and so empty levels.

    Args:
        edges: task -> ascending inner edges (L - 1 of them), in the task's unit.
    """

    def __init__(self, edges: Mapping[str, Sequence[float]]):
        self.edges = {task: np.asarray(e, dtype=np.float64) for task, e in edges.items()}
        for task, e in self.edges.items():
            if e.ndim != 1 or np.any(np.diff(e) < 0):
                raise ValueError(f"quantile edges of {task!r} must be a 1-D ascending sequence, got {e.tolist()}")

    @property
    def levels(self) -> dict[str, int]:
        """task -> L."""
        return {task: len(e) + 1 for task, e in self.edges.items()}

    @classmethod
    def fit(cls, values: Mapping[str, Iterable[float]], levels: int) -> QuantileBins:
        """Edges at the quantiles 1/L .. (L-1)/L of each task's observed values (None/NaN skipped)."""
        if levels < 2:
            raise ValueError(f"quantile binning needs at least 2 levels, got {levels}")
        edges = {}
        for task, vals in values.items():
            arr = np.array([v for v in vals if v is not None], dtype=np.float64)
            arr = arr[np.isfinite(arr)]
            if arr.size == 0:
                raise ValueError(f"cannot fit quantile bins for {task!r}: no values")
            edges[task] = np.quantile(arr, np.arange(1, levels) / levels)
        return cls(edges)

    def level(self, task: str, value: float) -> float:
        """The level 0..L-1 of ``value`` (NaN stays NaN); tasks without edges pass through unchanged."""
        edges = self.edges.get(task)
        if edges is None or value is None or math.isnan(value):
            return value
        return float(np.searchsorted(edges, value, side="right"))

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {"edges": {task: e.tolist() for task, e in self.edges.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> QuantileBins:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(data["edges"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a quantile-bins description: {exc}") from None

    def save(self, path) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=1)

    @classmethod
    def load(cls, path) -> QuantileBins:
        with open(path) as fh:
            return cls.from_dict(json.load(fh))


def _class_index(classes: Sequence[str], name: str) -> float:
    if name in classes:
        return float(classes.index(name))
    if vocab.OTHERS in classes:  # a spec with fewer named classes: the rest is "others"
        return float(classes.index(vocab.OTHERS))
    return MISSING


def targets(
    rows: Sequence[Mapping[str, Label]], spec: TaskSpec, bins: QuantileBins | None = None, dtype=torch.float32
) -> torch.Tensor:
    """[N, J] targets for ``spec`` from N label dicts (task name -> label, None = missing).

    Ordinal tasks take the float value (or its quantile level with ``bins``); categorical tasks the
    index of the class name in the task's classes (a name the task lacks -> ``others`` when it has
    that class, else missing); tasks without a label in the rows (manipulated, region) stay NaN.
    """
    columns = {t: [r.get(t) for r in rows] for t in TASKS}
    return targets_from_columns(columns, len(rows), spec, bins, dtype)


def targets_from_columns(
    columns: Mapping[str, Sequence[Label]],
    n: int,
    spec: TaskSpec,
    bins: QuantileBins | None = None,
    dtype=torch.float32,
) -> torch.Tensor:
    """:func:`targets` from label columns (task -> N labels; tasks not given are missing), without building a
    dict a row (manifests of 200k photos)."""
    out = spec.empty_targets(n, dtype=torch.float64)
    for k, task in enumerate(spec.tasks):
        if task.name not in TASKS or task.name not in columns:
            continue
        labels = columns[task.name]
        col = spec.target_offsets[k]
        if task.kind == "ordinal":
            if task.name not in ORDINAL_SOURCES:
                raise ValueError(f"task {task.name!r} is categorical in EXIF but ordinal in the spec")
            column = [MISSING if v is None else float(v) for v in labels]
            if bins is not None:
                column = [bins.level(task.name, v) for v in column]
        elif task.kind == "categorical":
            if task.name not in CATEGORICAL_SOURCES:
                raise ValueError(f"task {task.name!r} is ordinal in EXIF but categorical in the spec")
            index = {name: _class_index(task.classes, name) for name in set(labels) if name is not None}
            column = [MISSING if v is None else index[v] for v in labels]
        else:
            raise ValueError(f"task {task.name!r} is an EXIF task but has kind {task.kind!r}")
        out[:, col] = torch.tensor(column, dtype=torch.float64)
    return out.to(dtype)
