"""A whole bi-level step captured as one CUDA graph and replayed.

At the sizes the method runs at, a step launches thousands of small kernels and the host's launch work
shows; a CUDA graph replays them all with one launch. What a captured step needs, and how it is met:

* no host synchronisation inside the step: the trainer's step reads nothing back (device flags, a
  device-side Adam for lambda, ``perturb_pair`` computes eps on the device);
* fixed addresses: the batches are copied into static input buffers, the theta+- / v / gradient
  workspace is allocated once, and the outputs are copied out of the graph's buffers after each replay;
* capturable optimizers: Adam/AdamW with ``capturable=True`` (or ``fused=True``), or SGD, whose state lives
  on the device; no lr scheduler (it would change a learning rate the graph holds as a constant);
* the random streams: a captured step holds no random ops (the paired evaluation and the jvp replay the
  dropout masks of the forward at theta, which a graph cannot), so models with active dropout are refused;
* warm-up: a few eager steps on a side stream first (lazy initialisation, optimizer state), as
  ``torch.cuda.graphs`` requires; one graph per kind of step (outer, plain), each with its own memory pool.

Where capture cannot work (a CPU model, the ``unroll`` mode, distributed training, a non-capturable
optimizer, a scheduler, dropout, half-precision parameters, batches whose shapes change) the trainer
refuses with the reason, or with ``cuda_graph="auto"`` runs those steps eagerly. A change of the optimizer's
hyperparameters (lr, weight decay, momentum) is noticed before a replay and the step is captured again.
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from bfdkern.bilevel.objective import to_device

WARMUP_STEPS = 3
"""Eager steps of each kind (on a side stream) before that kind is captured."""
CAPTURABLE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)
"""Optimizers that can be captured with ``capturable=True`` or ``fused=True``; SGD always can."""


def capture_refusals(trainer) -> list[str]:
    """Every reason why this trainer's steps cannot be captured as a CUDA graph (empty: they can)."""
    reasons = []
    device = trainer.layout.device
    if device.type != "cuda":
        reasons.append(f"the model is on {device}: CUDA graphs need a CUDA device")
    if not trainer.mode.capturable:
        reasons.append(
            f"mode={trainer.mode.name!r} builds a new double-backward graph every step; use mode='jvp' (exact) or 'fd'"
        )
    if trainer.sync is not None:
        reasons.append("torch.distributed collectives are not captured; train each rank eagerly")
    opt = trainer.optimizer
    if not isinstance(opt, torch.optim.SGD):
        if not isinstance(opt, CAPTURABLE_OPTIMIZERS):
            reasons.append(f"{type(opt).__name__} cannot be captured; use Adam/AdamW(capturable=True) or SGD")
        elif not all(g.get("capturable") or g.get("fused") for g in opt.param_groups):
            reasons.append(
                f"{type(opt).__name__} keeps its step count on the host; build it with capturable=True (or fused=True)"
            )
    if trainer.scheduler is not None:
        reasons.append("an lr scheduler changes the learning rate, which a captured step holds as a constant")
    if any(isinstance(g.get("lr"), Tensor) for g in opt.param_groups):
        reasons.append("a Tensor learning rate: the virtual step reads alpha as a number; give lr as a float")
    dropout = [n for n, m in trainer.model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    active = [n for n in dropout if trainer.model.get_submodule(n).training and trainer.model.get_submodule(n).p > 0]
    if active:
        reasons.append(
            f"dropout is active in {active[:3]}: the step replays its masks from the random state, which a graph "
            "cannot; put those modules in eval mode"
        )
    if trainer.layout.dtype != trainer.layout.master_dtype:
        reasons.append(f"{trainer.layout.dtype} parameters have no gradient workspace; use float32 with amp_dtype")
    return reasons


def batch_signature(batch) -> tuple:
    """The structure, shapes, dtypes and devices of a batch pytree (what a captured step is fixed to)."""
    leaves, spec = tree_flatten(batch)
    return (spec, tuple((tuple(t.shape), t.dtype, t.device) if isinstance(t, Tensor) else t for t in leaves))


def describe(signature: tuple) -> str:
    """The shapes of a :func:`batch_signature`, for messages."""
    return ", ".join(f"{list(s[0])}" for s in signature[1] if isinstance(s, tuple))


class _Captured:
    """One captured kind of step: the graph, the step it recorded (``body``, on the static ``inputs``), its
    outputs (``record``, overwritten by every replay), the batch signature and optimizer settings it holds."""

    def __init__(self, graph, body, inputs, record, signature, settings):
        self.graph, self.body, self.inputs, self.record = graph, body, inputs, record
        self.signature, self.settings = signature, settings


class CapturedSteps:
    """The captured steps of one trainer (see the module doc). :meth:`step` returns None when the caller
    must run the step eagerly (not captured, or ``"auto"`` with a step that cannot be)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.auto = trainer.config.cuda_graph == "auto"
        self.warmed = {True: 0, False: 0}
        self.captured: dict[bool, _Captured] = {}
        self.side = torch.cuda.Stream(trainer.layout.device)
        self._warned: set[str] = set()

    @classmethod
    def for_trainer(cls, trainer) -> CapturedSteps | None:
        """The capture of ``trainer``'s steps; a ValueError with the reasons where it cannot work (or, with
        ``cuda_graph="auto"``, a warning and None: eager steps)."""
        reasons = capture_refusals(trainer)
        if not reasons:
            return cls(trainer)
        text = "; ".join(reasons)
        if trainer.config.cuda_graph == "auto":
            warnings.warn(f"cuda_graph='auto': steps run eagerly: {text}", stacklevel=3)
            return None
        raise ValueError(f"cuda_graph=True cannot capture this trainer's steps: {text}")

    def _fallback(self, reason: str) -> None:
        if not self.auto:
            raise ValueError(f"cuda_graph=True: {reason}; pass cuda_graph='auto' to run such steps eagerly")
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"cuda_graph='auto': {reason}; that step runs eagerly", stacklevel=4)

    def _settings(self) -> tuple:
        """The optimizer hyperparameters a captured step holds as constants."""
        keys = ("lr", "weight_decay", "momentum", "dampening", "nesterov", "betas", "eps")
        return tuple(tuple(str(g.get(k)) for k in keys) for g in self.trainer.optimizer.param_groups)

    def step(self, outer: bool, batch_tr, batch_val):
        """One step of kind ``outer``: eager warm-up on a side stream, then capture, then replays."""
        trainer, device = self.trainer, self.trainer.layout.device
        batch_tr, batch_val = to_device(batch_tr, device), to_device(batch_val, device)
        if self.warmed[outer] < WARMUP_STEPS:
            self.warmed[outer] += 1
            self.side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(self.side):
                record = trainer.run_step(outer, batch_tr, batch_val)
            torch.cuda.current_stream(device).wait_stream(self.side)
            return record
        signature = batch_signature((batch_tr, batch_val))
        captured = self.captured.get(outer)
        if captured is not None and captured.signature != signature:
            self._fallback(
                f"the batch shapes changed (captured for {describe(captured.signature)}, got {describe(signature)})"
            )
            return None
        start = time.perf_counter()
        if captured is None or captured.settings != self._settings():
            try:
                captured = self.captured[outer] = self._capture(outer, batch_tr, batch_val, signature)
            except Exception as exc:  # reported as the reason, or raised without "auto"
                self.captured.pop(outer, None)
                self._fallback(f"capturing the step failed ({type(exc).__name__}: {exc})")
                return None
        else:
            for static, new in zip(tree_flatten(captured.inputs)[0], tree_flatten((batch_tr, batch_val))[0]):
                if isinstance(static, Tensor):
                    static.copy_(new, non_blocking=True)
        self._replay(captured)
        record = captured.record
        out = type(record)(
            record.step,
            *(None if t is None else t.clone() for t in (record.per_task, record.lambdas, record.hypergrad)),
            *(None if t is None else t.clone() for t in (record.eps, record.outer_loss, record.problems)),
            timings={"total": time.perf_counter() - start},
        )
        out.step = trainer.steps + 1
        return out

    @staticmethod
    def _replay(captured: _Captured) -> None:
        captured.graph.replay()

    def _capture(self, outer: bool, batch_tr, batch_val, signature) -> _Captured:
        """Record one step on static copies of the batches (recording runs nothing: the replay that
        follows takes this step)."""
        trainer = self.trainer
        inputs = tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, (batch_tr, batch_val))

        def body():
            return trainer.run_step(outer, *inputs)

        groups_before = len(trainer.checks._groups)
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(trainer.layout.device)
        # Its own memory pool (graphs of the two kinds replay in any order); errors only for this thread's
        # work (DataLoader threads pinning memory may touch CUDA meanwhile).
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            record = body()
        if len(trainer.checks._groups) != groups_before:
            raise RuntimeError("a step condition first appeared during capture; warm-up did not cover it")
        return _Captured(graph, body, inputs, record, signature, self._settings())
