"""The loss seam of the bi-level engine: what is trained, as K per-task losses of a model's outputs.

Nothing in the bi-level method needs a particular loss: the engine asks an :class:`Objective` for the
model's inputs in a batch and for the [K] per-task losses of the model's outputs, and takes l_1 as the
sum of the outer tasks' losses. Batches and outputs are whatever the objective understands (a tuple, a
dict of tensors, any pytree); the engine moves every tensor of a batch to the model's device.

:class:`SpecObjective` is bfdkern's own: packed logits ``[B, C]`` and NaN-coded targets ``[B, J]`` for a
:class:`~bfdkern.tasks.TaskSpec`, through the fused ``multitask_loss`` op.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from bfdkern.bilevel.checks import Condition
from bfdkern.ops import multitask_loss, reference
from bfdkern.ops.validate import check_loss_inputs, label_problems
from bfdkern.tasks import TaskSpec


class BatchChecks(NamedTuple):
    """Conditions on a batch's values, found on the device (no host sync) and reported later.

    Attributes:
        conditions: what each flag means (a :class:`~bfdkern.bilevel.checks.Condition`; usually
            ``error=ValueError``).
        flags: [n] bool on the device, True where the condition holds.
    """

    conditions: tuple[Condition, ...]
    flags: Tensor


class Objective:
    """K per-task losses of a multi-task model; subclass it for your own model and losses.

    Set ``names`` (the K task names) and ``outer`` (the names of the outer tasks, whose summed loss l_1 the
    task weights are tuned to lower), and implement :meth:`losses`. Override :meth:`inputs` when a batch is
    not an ``(inputs, targets)`` pair, and the two variants when :meth:`losses` is not twice differentiable
    (``unroll``) or has no forward-mode derivative (``jvp``).
    """

    names: tuple[str, ...] = ()
    outer: tuple[str, ...] = ()

    @property
    def num_tasks(self) -> int:
        """K."""
        return len(self.names)

    @property
    def outer_indices(self) -> tuple[int, ...]:
        """Indices of the outer tasks in ``names``."""
        return tuple(self.names.index(n) for n in self.outer)

    def inputs(self, batch) -> tuple:
        """The model's positional arguments for ``batch`` (default: ``(batch[0],)`` of an (inputs, targets) pair)."""
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return (batch[0],)
        raise ValueError(
            f"{type(self).__name__}.inputs: a batch of type {type(batch).__name__} is not an (inputs, targets) pair; "
            "override inputs(batch) to say what the model takes"
        )

    def losses(self, outputs, batch) -> Tensor:
        """[K] per-task losses of the model's ``outputs`` on ``batch``, with a graph."""
        raise NotImplementedError(f"{type(self).__name__} must implement losses(outputs, batch) -> [K] tensor")

    def twice_differentiable_losses(self, outputs, batch) -> Tensor:
        """:meth:`losses` through ops with a double backward (``unroll`` mode); default :meth:`losses`."""
        return self.losses(outputs, batch)

    def forward_mode_losses(self, outputs, batch) -> Tensor:
        """:meth:`losses` through ops with a forward-mode derivative (``jvp`` mode); default :meth:`losses`."""
        return self.losses(outputs, batch)

    def prepare(self, batch, what: str, outer: bool = False) -> tuple[Any, BatchChecks | None]:
        """The batch as the losses will read it, and the device-side checks of its values (None: no checks).
        ``outer``: the batch is a validation batch, whose outer tasks must be labelled. Shape checks raise
        here; value checks must not read the device (the trainer reports them later)."""
        return batch, None


def check_objective(objective) -> None:
    """The objective names K >= 1 distinct tasks and at least one outer task among them."""
    for attr in ("names", "outer_indices", "losses", "inputs"):
        if not hasattr(objective, attr):
            raise ValueError(f"{type(objective).__name__} is not an Objective: it has no {attr!r}")
    names = tuple(objective.names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"the objective needs K >= 1 distinct task names, got {list(names)}")
    try:
        outer = tuple(objective.outer_indices)
    except ValueError as exc:
        raise ValueError(f"an outer task is not among the task names {list(names)}: {exc}") from None
    if not outer:
        raise ValueError(
            f"the objective has no outer task (l_1): name one in outer (or Task(..., outer=True)); tasks are {list(names)}"
        )


def as_objective(objective_or_spec, backend: str | None = None):
    """An :class:`Objective` from a TaskSpec (:class:`SpecObjective` with ``backend``) or an objective itself."""
    objective = (
        SpecObjective(objective_or_spec, backend) if isinstance(objective_or_spec, TaskSpec) else objective_or_spec
    )
    check_objective(objective)
    return objective


def to_device(batch, device: torch.device):
    """Every tensor of a batch pytree on ``device`` (non-blocking)."""
    return tree_map(lambda t: t.to(device, non_blocking=True) if isinstance(t, Tensor) else t, batch)


def outer_loss(per_task: Tensor, objective) -> Tensor:
    """l_1: the sum of the outer tasks' losses."""
    return per_task[list(objective.outer_indices)].sum()


# ---------------------------------------------------------------------------------------------
# bfdkern's task spec
# ---------------------------------------------------------------------------------------------
def split_batch(batch, what: str) -> tuple[Tensor, Tensor]:
    """(inputs, targets) from a batch tuple."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{what} must be an (inputs, targets) pair, got {type(batch).__name__}")
    inputs, targets = batch
    if not isinstance(targets, Tensor) or not isinstance(inputs, Tensor):
        raise ValueError(f"{what}: inputs and targets must be tensors")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"{what}: {inputs.shape[0]} inputs but {targets.shape[0]} target rows")
    return inputs, targets


def check_model_output(logits, spec: TaskSpec, batch_size: int, what: str = "model") -> None:
    """The model must return packed logits [B, spec.num_columns]."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"{what} must return a logits tensor [B, C], got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape != (batch_size, spec.num_columns):
        layout = ", ".join(f"{t.name}:{t.num_columns}" for t in spec.tasks)
        raise ValueError(
            f"{what} returned shape {tuple(logits.shape)} but the task spec needs packed logits "
            f"[B={batch_size}, C={spec.num_columns}] ({layout})"
        )


def _label_expectation(task) -> str:
    if task.kind == "ordinal":
        return "finite values (NaN = missing)"
    if task.kind == "multilabel":
        return "0 or 1 (NaN = missing)"
    return f"integer class indices in [0, {task.num_columns - 1}] (NaN = missing)"


class SpecObjective(Objective):
    """bfdkern's objective: the model returns packed logits [B, C] for ``spec``; a batch is (inputs, targets
    [B, J]) with NaN for a missing label; the losses run through the fused op on ``backend`` (default by
    device; also under ``torch.func.jvp``), the ``unroll`` variant through the twice-differentiable reference."""

    def __init__(self, spec: TaskSpec, backend: str | None = None):
        self.spec, self.backend = spec, backend
        self._column_cache: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self.names = tuple(spec.names)
        self.outer = tuple(spec.names[k] for k in spec.outer_indices)

    @property
    def outer_indices(self) -> tuple[int, ...]:
        return tuple(self.spec.outer_indices)

    def inputs(self, batch) -> tuple:
        return (split_batch(batch, "batch")[0],)

    def _logits(self, outputs, batch) -> tuple[Tensor, Tensor]:
        _, targets = batch
        check_model_output(outputs, self.spec, targets.shape[0])
        return outputs, targets

    def losses(self, outputs, batch) -> Tensor:
        logits, targets = self._logits(outputs, batch)
        return multitask_loss(logits, targets, self.spec, backend=self.backend, check_labels=False)[0]

    def twice_differentiable_losses(self, outputs, batch) -> Tensor:
        logits, targets = self._logits(outputs, batch)
        check_loss_inputs(logits, targets, torch.ones(self.num_tasks, device=logits.device), self.spec, labels=False)
        return reference.per_task_losses(logits, targets, self.spec)

    def forward_mode_losses(self, outputs, batch) -> Tensor:
        return self.losses(outputs, batch)  # the fused op has a forward-mode rule on every backend

    def prepare(self, batch, what: str, outer: bool = False) -> tuple[tuple[Tensor, Tensor], BatchChecks]:
        """Invalid labels are masked out (NaN), so no kernel ever reads them, and flagged per task; a
        validation batch without any outer label is flagged too."""
        spec = self.spec
        inputs, targets = split_batch(batch, what)
        if targets.dim() != 2 or targets.shape[1] != spec.num_targets:
            raise ValueError(f"{what}: targets must be [B, J={spec.num_targets}], got {tuple(targets.shape)}")
        invalid = label_problems(targets, spec)  # [B, J] bool
        targets = torch.where(invalid, float("nan"), targets)
        conditions = [
            Condition(
                f"{what}: task {{items}} ({t.kind}): labels must be {_label_expectation(t)}; the invalid ones "
                "were ignored (masked) in that step",
                repr(t.name),
                ValueError,
            )
            for t in spec.tasks
        ]
        column_task, outer_columns = self._columns(targets.device)
        flags = invalid.any(dim=0).to(column_task.dtype) @ column_task > 0  # [K]: some column of task k
        if outer:
            names = [spec.names[k] for k in spec.outer_indices]
            conditions.append(
                Condition(
                    f"{what} has no label for the outer task(s) {names} (all NaN): l_1 is undefined there; every "
                    "validation batch needs outer labels (lambda was not updated in that step)",
                    error=ValueError,
                )
            )
            unlabelled = torch.isnan(targets.index_select(1, outer_columns)).all()
            flags = torch.cat([flags, unlabelled[None]])
        return (inputs, targets), BatchChecks(tuple(conditions), flags)

    def _columns(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """[J, K] float: target column j belongs to task k; [J_outer] the outer tasks' target columns. Made
        once per device (a tensor from Python values costs a host-to-device copy)."""
        if device not in self._column_cache:
            spec = self.spec
            column_task = torch.zeros(spec.num_targets, spec.num_tasks)
            outer = []
            for k in range(spec.num_tasks):
                cols = spec.target_columns(k)
                column_task[cols, k] = 1.0
                if k in spec.outer_indices:
                    outer += range(cols.start, cols.stop)
            self._column_cache[device] = (column_task.to(device), torch.tensor(outer, device=device))
        return self._column_cache[device]
