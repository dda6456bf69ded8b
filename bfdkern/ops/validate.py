"""Input checks shared by every backend: bad input gets a ValueError that names the task and
the problem before any kernel runs, so no backend can crash on it."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from bfdkern.tasks import TaskSpec

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_loss_inputs(logits: Tensor, targets: Tensor, weights: Tensor, spec: TaskSpec, labels: bool = True) -> None:
    """Shapes, dtypes and devices of a multitask_loss call; with ``labels`` also the label values
    (one host sync)."""
    for name, t in (("logits", logits), ("targets", targets), ("weights", weights)):
        if not isinstance(t, Tensor):
            raise ValueError(f"multitask_loss: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _FLOAT:
            raise ValueError(f"multitask_loss: {name} must be floating point (missing labels are NaN), got {t.dtype}")
    if logits.dim() != 2:
        raise ValueError(f"multitask_loss: logits must be [B, C], got shape {tuple(logits.shape)}")
    devices = {logits.device, targets.device, weights.device}
    if len(devices) > 1:
        raise ValueError(
            f"multitask_loss: tensors on different devices: logits {logits.device}, "
            f"targets {targets.device}, weights {weights.device}"
        )
    b, c = logits.shape
    if b < 1:
        raise ValueError("multitask_loss: empty batch (B = 0)")
    if c != spec.num_columns:
        layout = ", ".join(f"{t.name}:{t.num_columns}" for t in spec.tasks)
        raise ValueError(f"multitask_loss: logits have {c} columns but the spec needs {spec.num_columns} ({layout})")
    if targets.shape != (b, spec.num_targets):
        raise ValueError(
            f"multitask_loss: targets must be [B={b}, J={spec.num_targets}] for this spec, got {tuple(targets.shape)}"
        )
    if weights.shape != (spec.num_tasks,):
        raise ValueError(f"multitask_loss: weights must be [K={spec.num_tasks}], got {tuple(weights.shape)}")
    if labels:
        check_labels(targets, spec)


@functools.lru_cache(maxsize=64)
def _label_columns(spec: TaskSpec, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per target column [J]: categorical (class index), multilabel (0/1), number of classes; built once
    per spec and device (a tensor made from Python values would cost a host-to-device copy per call)."""
    categorical, multilabel, classes = [], [], []
    for task in spec.tasks:
        n = task.num_targets
        categorical += [task.kind in ("categorical", "binary")] * n
        multilabel += [task.kind == "multilabel"] * n
        classes += [float(task.num_columns)] * n
    return (
        torch.tensor(categorical, device=device),
        torch.tensor(multilabel, device=device),
        torch.tensor(classes, device=device),
    )


def label_problems(targets: Tensor, spec: TaskSpec) -> Tensor:
    """[B, J] bool: the present labels (not NaN) that are invalid for their task: not finite (ordinal),
    not 0 or 1 (multilabel), not an integer class index (categorical, binary). No host sync."""
    categorical, multilabel, classes = _label_columns(spec, targets.device)
    y = targets
    bad_class = (y < 0) | (y >= classes.to(y.dtype)) | (y != torch.floor(y))
    bad_bit = (y != 0) & (y != 1)
    return ~torch.isnan(y) & (~torch.isfinite(y) | (categorical & bad_class) | (multilabel & bad_bit))


def check_labels(targets: Tensor, spec: TaskSpec) -> None:
    """Raise ValueError naming the task whose labels are out of range (one host sync in all)."""
    bad = label_problems(targets, spec)
    if not bool(bad.any()):
        return
    for k, task in enumerate(spec.tasks):
        cols = spec.target_columns(k)
        if bool(bad[:, cols].any()):
            y = targets[:, cols]
            present = y[~torch.isnan(y)]
            if task.kind == "ordinal":
                expect = "finite values (NaN = missing)"
            elif task.kind == "multilabel":
                expect = "0 or 1 (NaN = missing)"
            else:
                expect = f"integer class indices in [0, {task.num_columns - 1}] (NaN = missing)"
            shown = present.flatten()[:5].tolist()
            raise ValueError(
                f"multitask_loss: task {task.name!r} ({task.kind}): labels must be {expect}, got e.g. {shown}"
            )


def check_perturb_inputs(theta: Tensor, v: Tensor, radius: float) -> None:
    for name, t in (("theta", theta), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"perturb_pair: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _FLOAT:
            raise ValueError(f"perturb_pair: {name} must be floating point, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"perturb_pair: {name} must be a flat [N] buffer, got shape {tuple(t.shape)}")
    if theta.shape != v.shape:
        raise ValueError(f"perturb_pair: theta {tuple(theta.shape)} and v {tuple(v.shape)} differ in shape")
    if theta.device != v.device:
        raise ValueError(f"perturb_pair: theta on {theta.device} but v on {v.device}")
    if not radius > 0:
        raise ValueError(f"perturb_pair: radius must be > 0, got {radius}")


def check_perturb_out(theta: Tensor, v: Tensor, out: Tensor) -> None:
    """A caller's [2, N] workspace for perturb_pair: shape, dtype, device, layout, no overlap."""
    if not isinstance(out, Tensor):
        raise ValueError(f"perturb_pair: out must be a torch.Tensor, got {type(out).__name__}")
    n = theta.shape[0]
    if tuple(out.shape) != (2, n):
        raise ValueError(f"perturb_pair: out must be [2, {n}], got shape {tuple(out.shape)}")
    if out.dtype != theta.dtype:
        raise ValueError(f"perturb_pair: out must be {theta.dtype} like theta, got {out.dtype}")
    if out.device != theta.device:
        raise ValueError(f"perturb_pair: out on {out.device} but theta on {theta.device}")
    if not out.is_contiguous():
        raise ValueError("perturb_pair: out must be contiguous")
    if torch.compiler.is_compiling():
        return  # no addresses while tracing; the compiled path copies a finished result into out
    lo, hi = out.data_ptr(), out.data_ptr() + out.numel() * out.element_size()
    for name, t in (("theta", theta), ("v", v)):
        a = t.data_ptr()
        if out.numel() and not (a + t.numel() * t.element_size() <= lo or a >= hi):
            raise ValueError(f"perturb_pair: out overlaps {name}")
