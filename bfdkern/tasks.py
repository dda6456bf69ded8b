"""The task spec: the single declarative description of the K pretext tasks.

The loss kernels, the model heads, the dataset labels and the trainer all read the same
:class:`TaskSpec`, so adding a task is one edit.

Layouts
-------
* **logits** ``[B, C]``: the task heads packed side by side; task ``k`` owns columns
  ``col_offset[k] : col_offset[k] + num_columns[k]``.
* **targets** ``[B, J]`` floating point: one target column per task, except ``multilabel``
  tasks, which own ``R`` target columns (one per region). Missing labels are :data:`MISSING`
  (NaN): a missing label masks that sample (or pair) out of the task's loss, it is never a label.

  - ordinal: the raw value (ISO, seconds, f-number, mm); only its order matters.
  - categorical: the class index ``0 .. C-1`` stored as a float.
  - binary: ``0`` (real) or ``1`` (manipulated).
  - multilabel: ``0`` or ``1`` per column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

from bfdkern.exif.vocab import CATEGORICAL_TAGS, ORDINAL_TAGS

if TYPE_CHECKING:  # the spec is plain data; torch is imported by the two methods that make tensors
    import torch

MISSING = math.nan
"""The missing-label marker in a targets tensor."""

Kind = Literal["ordinal", "categorical", "binary", "multilabel"]
KIND_CODES: dict[str, int] = {"ordinal": 0, "categorical": 1, "binary": 2, "multilabel": 3}
"""Integer codes of the kinds, as the compiled kernels receive them."""

DEFAULT_GAMMA = {"ordinal": 0.0, "categorical": 2.0, "binary": 0.0, "multilabel": 0.0}
"""Focal exponent per kind: the categorical EXIF tags use (1 - p_y)^2 (the paper's choice)."""


class KernelLayout(NamedTuple):
    """The task layout as the fused kernels receive it: per-task lists in packing order and the
    two Thurstone constants. A tuple, so ``*layout`` is the compiled ops' argument list in schema
    order (csrc/registration.cpp), and hashable, so kernels may cache per layout."""

    kinds: tuple[int, ...]
    """:data:`KIND_CODES` of each task."""
    col_offsets: tuple[int, ...]
    """First logit column of each task."""
    col_counts: tuple[int, ...]
    """Logit columns of each task."""
    target_offsets: tuple[int, ...]
    """First target column of each task."""
    gammas: tuple[float, ...]
    """Focal exponent of each task."""
    sigma: float
    delta: float

    @classmethod
    def of(cls, kinds, col_offsets, col_counts, target_offsets, gammas, sigma, delta) -> KernelLayout:
        """A layout from any sequences (e.g. the lists an op schema hands its kernel)."""
        return cls(
            tuple(int(x) for x in kinds),
            tuple(int(x) for x in col_offsets),
            tuple(int(x) for x in col_counts),
            tuple(int(x) for x in target_offsets),
            tuple(float(x) for x in gammas),
            float(sigma),
            float(delta),
        )


@dataclass(frozen=True)
class Task:
    """One pretext task.

    Args:
        name: unique identifier (``"iso"``, ``"make"``, ...).
        kind: ``ordinal`` | ``categorical`` | ``binary`` | ``multilabel``.
        num_columns: logit columns: ordinal 1 (a score) or L (levels scored as the expected
            level sum_k k * softmax_k); categorical C; binary 2; multilabel R.
        classes: class names (categorical, binary) or region names (multilabel).
        outer: part of the outer (validation) objective l_1.
        gamma: focal exponent for categorical / binary ((1 - p_y)^gamma).
    """

    name: str
    kind: Kind
    num_columns: int
    classes: tuple[str, ...] = ()
    outer: bool = False
    gamma: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KIND_CODES:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}, expected one of {list(KIND_CODES)}")
        if self.num_columns < 1:
            raise ValueError(f"task {self.name!r}: num_columns must be >= 1, got {self.num_columns}")
        if self.kind == "binary" and self.num_columns != 2:
            raise ValueError(f"task {self.name!r}: a binary task has 2 columns, got {self.num_columns}")
        if self.kind == "categorical" and self.num_columns < 2:
            raise ValueError(f"task {self.name!r}: a categorical task needs >= 2 columns")
        if self.classes and len(self.classes) != self.num_columns and self.kind != "ordinal":
            raise ValueError(f"task {self.name!r}: {len(self.classes)} class names for {self.num_columns} columns")
        if self.gamma is None:
            object.__setattr__(self, "gamma", DEFAULT_GAMMA[self.kind])

    @property
    def num_targets(self) -> int:
        """Target columns this task owns in the packed targets tensor."""
        return self.num_columns if self.kind == "multilabel" else 1


@dataclass(frozen=True)
class TaskSpec:
    """An ordered collection of tasks with their packed column layout.

    Args:
        tasks: the tasks in packing order.
        sigma: Thurstone scale of the ordinal pairwise probability p_ij = Phi((s_i - s_j) / sigma).
        delta: stabiliser under the fidelity-loss square roots (keeps the gradient finite at p = 0).
    """

    tasks: tuple[Task, ...]
    sigma: float = 0.5
    delta: float = 1e-8
    col_offsets: tuple[int, ...] = field(init=False)
    target_offsets: tuple[int, ...] = field(init=False)
    layout: KernelLayout = field(init=False, repr=False, compare=False)
    """What the kernels receive (built once: a spec is frozen)."""

    def __post_init__(self) -> None:
        tasks = tuple(self.tasks)
        object.__setattr__(self, "tasks", tasks)
        if not tasks:
            raise ValueError("a TaskSpec needs at least one task")
        names = [t.name for t in tasks]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate task names: {sorted(dup)}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        cols, tgts, c, j = [], [], 0, 0
        for t in tasks:
            cols.append(c)
            tgts.append(j)
            c += t.num_columns
            j += t.num_targets
        object.__setattr__(self, "col_offsets", tuple(cols))
        object.__setattr__(self, "target_offsets", tuple(tgts))
        layout = KernelLayout.of(
            [KIND_CODES[t.kind] for t in tasks],
            cols,
            [t.num_columns for t in tasks],
            tgts,
            [t.gamma for t in tasks],
            self.sigma,
            self.delta,
        )
        object.__setattr__(self, "layout", layout)

    # --- sizes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, key: int | str) -> Task:
        if isinstance(key, str):
            return self.tasks[self.index(key)]
        return self.tasks[key]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_columns(self) -> int:
        """C: total logit columns."""
        return sum(t.num_columns for t in self.tasks)

    @property
    def num_targets(self) -> int:
        """J: total target columns."""
        return sum(t.num_targets for t in self.tasks)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def index(self, name: str) -> int:
        for k, t in enumerate(self.tasks):
            if t.name == name:
                return k
        raise KeyError(f"no task named {name!r}; tasks are {list(self.names)}")

    @property
    def outer_indices(self) -> tuple[int, ...]:
        return tuple(k for k, t in enumerate(self.tasks) if t.outer)

    def outer_mask(self, device=None, dtype=None) -> torch.Tensor:
        """[K] 1.0 for the tasks of the outer objective l_1, else 0.0 (``dtype`` default float32)."""
        import torch  # lazy: CLI start-up (pretrain --help, via training.config)

        return torch.tensor([1.0 if t.outer else 0.0 for t in self.tasks], device=device, dtype=dtype or torch.float32)

    def columns(self, key: int | str) -> slice:
        k = self.index(key) if isinstance(key, str) else key
        return slice(self.col_offsets[k], self.col_offsets[k] + self.tasks[k].num_columns)

    def target_columns(self, key: int | str) -> slice:
        k = self.index(key) if isinstance(key, str) else key
        return slice(self.target_offsets[k], self.target_offsets[k] + self.tasks[k].num_targets)

    @classmethod
    def from_layout(cls, layout: KernelLayout) -> TaskSpec:
        """An (anonymous) spec with this kernel layout; an op's schema carries only the layout,
        and the reference backend needs a spec."""
        names = {v: k for k, v in KIND_CODES.items()}
        tasks, col, tgt = [], 0, 0
        for i, (kind, c0, n, t0, g) in enumerate(
            zip(layout.kinds, layout.col_offsets, layout.col_counts, layout.target_offsets, layout.gammas)
        ):
            if c0 != col or t0 != tgt:
                raise ValueError(f"task {i}: columns must be packed contiguously in order")
            task = Task(f"task{i}", names[int(kind)], int(n), gamma=float(g))
            tasks.append(task)
            col += task.num_columns
            tgt += task.num_targets
        return cls(tuple(tasks), sigma=float(layout.sigma), delta=float(layout.delta))

    def to_dict(self) -> dict:
        """A JSON-able description (checkpoints and run configs store the spec this way)."""
        return {
            "sigma": self.sigma,
            "delta": self.delta,
            "tasks": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "num_columns": t.num_columns,
                    "classes": list(t.classes),
                    "outer": t.outer,
                    "gamma": t.gamma,
                }
                for t in self.tasks
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> TaskSpec:
        """Inverse of :meth:`to_dict`."""
        try:
            tasks = tuple(
                Task(
                    d["name"],
                    d["kind"],
                    int(d["num_columns"]),
                    tuple(d.get("classes", ())),
                    bool(d.get("outer", False)),
                    d.get("gamma"),
                )
                for d in data["tasks"]
            )
            return cls(tasks, sigma=float(data.get("sigma", 0.5)), delta=float(data.get("delta", 1e-8)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a task spec description: missing or malformed field {exc}") from None

    def empty_targets(self, batch: int, dtype=None, device=None) -> torch.Tensor:
        """[B, J] all-missing targets to fill in (``dtype`` default float32)."""
        import torch  # lazy: CLI start-up (pretrain --help, via training.config)

        return torch.full((batch, self.num_targets), MISSING, dtype=dtype or torch.float32, device=device)

    def subset(self, names) -> TaskSpec:
        """A spec with only the named tasks (in this spec's order); used by ablations."""
        keep = set(names)
        unknown = keep - set(self.names)
        if unknown:
            raise KeyError(f"unknown tasks {sorted(unknown)}; tasks are {list(self.names)}")
        return TaskSpec(tuple(t for t in self.tasks if t.name in keep), sigma=self.sigma, delta=self.delta)


# ---------------------------------------------------------------------------------------
# The BLADES default spec
# ---------------------------------------------------------------------------------------
REGION_CLASSES = ("mouth", "eye")
"""Face regions of the fine-grained manipulation task (the labels of BLADES' manipulated faces)."""
ORDINAL_LEVELS = 3
"""Columns of a BLADES ordinal head: 3 levels (low, medium, high), scored as the expected level of their
softmax (BLADES' ``L2R_Loss``); 1 is Zou25's raw score."""


def blades_spec(sigma: float = 0.5, gamma: float = 2.0, ordinal_levels: int = ORDINAL_LEVELS, classes=None) -> TaskSpec:
    """The BLADES default: 4 ordinal + 5 categorical EXIF tasks, the outer binary manipulation task l_1 and
    the multilabel region task (K = 11, J = 12; C = 47 with 3-level ordinal heads, 39 with ``ordinal_levels=1``).
    Sources of each choice: docs/defaults.md. ``classes``: categorical task -> class names replacing bfdkern's
    vocabulary for that task's head (labels imported from the official BLADES JSON name its classes,
    :data:`bfdkern.exif.vocab.BLADES_OFFICIAL_CLASSES`)."""
    chosen = {**CATEGORICAL_TAGS, **{t: tuple(c) for t, c in (classes or {}).items()}}
    unknown = sorted(set(chosen) - set(CATEGORICAL_TAGS))
    if unknown:
        raise ValueError(f"classes given for unknown categorical tasks {unknown}; known: {list(CATEGORICAL_TAGS)}")
    tasks = [Task(n, "ordinal", ordinal_levels) for n in ORDINAL_TAGS]
    tasks += [Task(n, "categorical", len(c), c, gamma=gamma) for n, c in chosen.items()]
    tasks.append(Task("manipulated", "binary", 2, ("real", "manipulated"), outer=True))
    tasks.append(Task("region", "multilabel", len(REGION_CLASSES), REGION_CLASSES))
    return TaskSpec(tuple(tasks), sigma=sigma)
