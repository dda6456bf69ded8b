"""BilevelTrainer: multi-task training whose task weights lambda are learned by bi-level optimisation.

Every outer step (the paper's steps 1-5):

1. theta' = theta - alpha (grad_theta sum_k lambda_k l_k(B_tr; theta) + wd theta)  (virtual step);
2. v = grad_theta' l_1(B_val; theta');
3. hypergradient h = d l_1(theta') / d lambda by ``fd`` | ``jvp`` | ``unroll``
   (:mod:`bfdkern.bilevel.hypergradient`);
4. lambda <- Adam step on h;
5. theta <- real optimizer step on sum_k lambda_k l_k(B_tr; theta) with the new lambda.

Cost, with f one forward and a backward about 2f: a plain weighted step is 3f. The paper order
with ``reuse_forward`` (step 5 backpropagates the per-task vector kept from step 1's forward with
the new lambda: ``per_task.backward(new_lambda)``) is about 10f: forward + backward at theta,
forward + backward at theta', the paired forward (2f), the real backward. ``reuse_forward=False``
adds a fresh forward (11f).

``update_order="lagged"`` is a deviation from the paper: step 5 applies step 1's gradient (the
old lambda) as the real update, so the new lambda takes effect one step later; it saves the
real backward (about 8f).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfdkern.bilevel.check import HypergradCheck, check_hypergrad
from bfdkern.bilevel.distributed import UNROLL_ERROR, check_sync_batchnorm, sync_for
from bfdkern.bilevel.hypergradient import (
    Hypergradient,
    check_mode,
    check_outer,
    check_outer_labels,
    forward_losses,
    hypergradient_from,
    inner_pass,
    split_batch,
)
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.precision import check_amp_dtype
from bfdkern.bilevel.virtual_step import VirtualStep
from bfdkern.tasks import TaskSpec

PARAMETRIZATIONS = ("raw", "softplus", "softmax")
UPDATE_ORDERS = ("paper", "lagged")
COLLAPSE_WARNING = 0.5
"""Warn when more than this fraction of the perturbed entries collapse in the compute dtype."""


@dataclass
class StepRecord:
    """What one :meth:`BilevelTrainer.step` did (tensors detached, on the model's device).

    Attributes:
        step: steps taken so far, this one included.
        per_task: [K] per-task losses on B_tr at theta (before the update).
        lambdas: [K] task weights after this step's outer update.
        hypergrad: [K] d l_1(theta') / d lambda (None on a step without outer update).
        eps: the finite-difference step r / ||v|| (None without outer update).
        outer_loss: l_1(B_val; theta') (None without outer update).
        skipped: why the outer update was skipped (lambda unchanged), else None.
        timings: seconds per phase (``inner``, ``outer``, ``lambda``, ``update``, ``total``).
    """

    step: int
    per_task: Tensor
    lambdas: Tensor
    hypergrad: Tensor | None = None
    eps: float | None = None
    outer_loss: float | None = None
    skipped: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain Python values (lists and floats), for logs."""
        out = {"step": self.step, "per_task": self.per_task.tolist(), "lambdas": self.lambdas.tolist()}
        out["hypergrad"] = None if self.hypergrad is None else self.hypergrad.tolist()
        out.update(eps=self.eps, outer_loss=self.outer_loss, skipped=self.skipped, timings=dict(self.timings))
        return out


class BilevelTrainer:
    """Trains ``model`` on sum_k lambda_k l_k while learning lambda by bi-level optimisation.

    Args:
        model: returns packed logits [B, spec.num_columns]; train/eval mode is the caller's.
        spec: the task spec; its outer tasks form the validation objective l_1.
        optimizer: the real optimizer (default: AdamW, lr 1e-5, weight decay 1e-3, as in the paper).
            alpha and wd of the virtual step are read from its param groups at every step.
        scheduler: optional lr scheduler, stepped after every real update.
        mode: hypergradient ``fd`` (paper's Eq. 18) | ``jvp`` (exact) | ``unroll`` (exact, Eq. 17).
        lambda_init: initial task weights (a float or a [K] sequence; 1.0 as in the paper).
        lambda_lr: Adam learning rate of lambda (3e-4 as in the paper).
        parametrization: ``raw`` (lambda itself, the paper), ``softplus`` (lambda = softplus(rho) > 0)
            or ``softmax`` (lambda = K softmax(rho), sums to K).
        outer_every: update lambda every k-th step (the others are plain weighted steps); 0 never updates
            it (fixed lambda: every step is a plain weighted step).
        radius: r in eps = r / ||v||.
        reuse_forward: the real update backpropagates the forward at theta with the new lambda
            (else a fresh forward, as research code does).
        update_order: ``paper`` (default) or ``lagged`` (deviation: real update with the old lambda,
            taken from the virtual step's gradient; saves a backward).
        batched_pair: ``fd``: evaluate theta+ and theta- in one vmapped forward (True) or in two
            forwards (False). Default: batched on CUDA, sequential on the CPU, where the vmapped
            (grouped) convolutions measured slower than two plain forwards, and for a distributed model
            with SyncBatchNorm (whose collectives cannot run under vmap; it also needs ``mode="fd"``).
        amp_dtype: None or torch.bfloat16 (autocast forwards; the perturbation stays float32).
        clip_grad_norm: clip the real update's gradient norm to this (None = no clipping); the
            virtual step uses the unclipped gradient.
        backend: loss and perturbation backend (default by device).
        sync_timings: synchronise CUDA at phase boundaries so the timings are device times.
        contiguous_params: move the trainable parameters into one flat buffer (each becomes a view
            of it; same Parameter objects and values), so theta reaches the perturbation op
            without a copy. Move the model to its device before building the trainer.
        distributed: average over the ranks of torch.distributed (:mod:`bfdkern.bilevel.distributed`):
            None = when the model is wrapped in DistributedDataParallel (which is unwrapped) or a
            process group of several ranks is initialised; each rank passes its share of the batches.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: TaskSpec,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler=None,
        *,
        mode: str = "fd",
        lambda_init=1.0,
        lambda_lr: float = 3e-4,
        parametrization: str = "raw",
        outer_every: int = 1,
        radius: float = 0.01,
        reuse_forward: bool = True,
        update_order: str = "paper",
        batched_pair: bool | None = None,
        amp_dtype: torch.dtype | None = None,
        clip_grad_norm: float | None = None,
        backend: str | None = None,
        sync_timings: bool = False,
        contiguous_params: bool = True,
        distributed: bool | None = None,
    ):
        check_mode(mode)
        model, self.sync = sync_for(model, distributed)
        if self.sync is not None and mode == "unroll":
            raise ValueError(UNROLL_ERROR)
        check_outer(spec)
        check_amp_dtype(amp_dtype)
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        if update_order not in UPDATE_ORDERS:
            raise ValueError(f"update_order must be one of {UPDATE_ORDERS}, got {update_order!r}")
        if int(outer_every) < 0:
            raise ValueError(f"outer_every must be >= 1, or 0 for a fixed lambda; got {outer_every}")
        if not radius > 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm}")
        if optimizer is None:
            optimizer = torch.optim.AdamW(
                [p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-3
            )
        self.model = model
        self.spec = spec
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.mode = mode
        self.parametrization = parametrization
        self.outer_every = int(outer_every)
        self.radius = float(radius)
        self.reuse_forward = bool(reuse_forward)
        self.update_order = update_order
        self.layout = ParamLayout.from_model(model, optimizer)
        sync_bn = self.sync is not None and check_sync_batchnorm(model, mode, batched_pair)
        if batched_pair is None:
            batched_pair = self.layout.device.type == "cuda" and not sync_bn
        self.batched_pair = bool(batched_pair)
        self.amp_dtype = amp_dtype
        self.clip_grad_norm = clip_grad_norm
        self.backend = backend
        self.sync_timings = sync_timings
        if contiguous_params:
            self.layout = self.layout.make_contiguous()
        if self.sync is not None:  # every replica starts from the first rank's theta, as DDP does
            theta = [self.layout.flat] if self.layout.aliased() else list(self.layout.params)
            with torch.no_grad():
                self.sync.broadcast_(theta, "the initial parameters")
            self.sync.broadcast_buffers_(model)
        self.steps = 0
        self._warned_collapse = False
        # Persistent workspaces (gradients, v, theta+-): a fresh N-sized buffer costs page faults
        # on the CPU every step; these are allocated once.
        self._grad_flat: Tensor | None = None
        self._grad_views: list[Tensor] = []
        self._v_flat: Tensor | None = None
        self._pair_flat: Tensor | None = None
        self._raw = nn.Parameter(self._initial_raw(lambda_init))
        self.lambda_optimizer = torch.optim.Adam([self._raw], lr=lambda_lr)

    # --- lambda ---------------------------------------------------------------------------
    def _initial_raw(self, lambda_init) -> Tensor:
        k = self.spec.num_tasks
        dtype, device = self.layout.master_dtype, self.layout.device
        init = torch.as_tensor(lambda_init, dtype=dtype, device=device).detach().clone()
        if init.dim() == 0:
            init = init.expand(k).clone()
        if init.shape != (k,):
            raise ValueError(f"lambda_init must be a float or [K={k}] values, got shape {tuple(init.shape)}")
        if not bool(torch.isfinite(init).all()):
            raise ValueError(f"lambda_init must be finite, got {init.tolist()}")
        if self.parametrization == "raw":
            return init
        if not bool((init > 0).all()):
            raise ValueError(f"the {self.parametrization} parametrisation needs lambda_init > 0, got {init.tolist()}")
        if self.parametrization == "softplus":
            return init + torch.log(-torch.expm1(-init))  # softplus^-1, stable for large init
        if not math.isclose(float(init.sum()), k, rel_tol=1e-6):
            raise ValueError(
                f"the softmax parametrisation keeps sum(lambda) = K = {k}; lambda_init sums to {float(init.sum())}"
            )
        return torch.log(init)

    def _weights(self, raw: Tensor) -> Tensor:
        if self.parametrization == "raw":
            return raw
        if self.parametrization == "softplus":
            return F.softplus(raw)
        return self.spec.num_tasks * torch.softmax(raw, dim=0)

    @property
    def lambdas(self) -> Tensor:
        """[K] the current task weights lambda (detached)."""
        with torch.no_grad():
            return self._weights(self._raw).detach().clone()

    def _update_lambda(self, hypergrad: Tensor) -> None:
        """One Adam step on lambda's raw parameters; the hypergradient is w.r.t. lambda itself."""
        with torch.enable_grad():
            w = self._weights(self._raw)
            (grad,) = torch.autograd.grad(w, self._raw, hypergrad.to(w.dtype))
        self.lambda_optimizer.zero_grad(set_to_none=True)
        self._raw.grad = grad
        self.lambda_optimizer.step()

    # --- one step -------------------------------------------------------------------------
    def _to_device(self, batch, what: str) -> tuple[Tensor, Tensor]:
        inputs, targets = split_batch(batch, what)
        device = self.layout.device
        return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    def _tick(self, timings: dict, name: str, start: float) -> float:
        if self.sync_timings and self.layout.device.type == "cuda":
            torch.cuda.synchronize(self.layout.device)
        now = time.perf_counter()
        timings[name] = now - start
        return now

    def _zero_grads(self) -> bool:
        """Zeroed ``.grad`` of the trained parameters as views of one persistent flat buffer (the
        gradients of every backward accumulate there in place). False for half-precision
        parameters, whose gradients are set to None instead."""
        layout = self.layout
        if layout.dtype != layout.master_dtype:
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if self._grad_flat is None:
            self._grad_flat = torch.zeros(layout.numel, dtype=layout.dtype, device=layout.device)
            self._grad_views = layout.views(self._grad_flat)
        else:
            self._grad_flat.zero_()
        for p, view in zip(layout.params, self._grad_views):
            if p.grad is not view:
                p.grad = view
        return True

    def _v_buffer(self) -> Tensor | None:
        if self.layout.dtype != self.layout.master_dtype:
            return None
        if self._v_flat is None:
            self._v_flat = torch.empty(self.layout.numel, dtype=self.layout.master_dtype, device=self.layout.device)
        return self._v_flat

    def _pair_buffer(self) -> Tensor | None:
        if self.mode != "fd":
            return None
        if self._pair_flat is None:  # theta+- in the master dtype, like the theta they perturb
            layout = self.layout
            self._pair_flat = torch.empty(2, layout.numel, dtype=layout.master_dtype, device=layout.device)
        return self._pair_flat

    def _check_finite(self, per_task: Tensor) -> None:
        bad = ~torch.isfinite(per_task.detach())
        if bool(bad.any()):
            names = [t.name for t, b in zip(self.spec.tasks, bad.tolist()) if b]
            raise FloatingPointError(
                f"step {self.steps + 1}: the training loss is not finite for task(s) {names} "
                f"(per-task losses {per_task.detach().tolist()}); check the inputs for NaN/Inf or lower the "
                "learning rate. Nothing was updated."
            )

    def _average_grads(self, persistent: bool, what: str, grads: list[Tensor] | None = None) -> None:
        """Average the gradients over the ranks: the flat buffer when ``persistent`` (one all-reduce of
        N values), else ``grads`` (default: the parameters' ``.grad``). No-op without distributed."""
        if self.sync is None:
            return
        if persistent:
            self.sync.average_(self._grad_flat, what)
            return
        if grads is None:
            for p in self.layout.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            grads = [p.grad for p in self.layout.params]
        self.sync.average_list_(grads, what)

    def _real_update(self) -> None:
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.layout.params, self.clip_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def _plain_step(self, inputs: Tensor, targets: Tensor, timings: dict, start: float, persistent: bool) -> StepRecord:
        w = self.lambdas
        per_task = forward_losses(
            self.model, self.spec, inputs, targets, amp_dtype=self.amp_dtype, backend=self.backend
        )
        self._check_finite(per_task)
        per_task.backward(w.to(per_task.dtype))
        self._average_grads(persistent, "the weighted gradient")
        self._real_update()
        self.steps += 1
        self._tick(timings, "total", start)
        return StepRecord(self.steps, per_task.detach(), w, timings=timings)

    def step(self, batch_tr, batch_val) -> StepRecord:
        """One training step: an outer (bi-level) step every ``outer_every`` steps, else a plain
        weighted step with the current lambda.

        Args:
            batch_tr: (inputs, targets [B, J]) training batch.
            batch_val: (inputs, targets [B', J]) validation batch; needs labels of the outer task(s).

        Returns:
            :class:`StepRecord`. lambda is never set to a non-finite value: an unusable
            hypergradient (||v|| = 0, NaN) skips the outer update with a warning.
        """
        timings: dict[str, float] = {}
        start = t = time.perf_counter()
        x_tr, y_tr = self._to_device(batch_tr, "training batch")
        if self.sync is not None:
            self.sync.broadcast_buffers_(self.model)
        persistent = self._zero_grads()
        if self.outer_every == 0 or self.steps % self.outer_every != 0:
            return self._plain_step(x_tr, y_tr, timings, start, persistent)
        x_val, y_val = self._to_device(batch_val, "validation batch")
        check_outer_labels(y_val, self.spec)

        lagged = self.update_order == "lagged"
        keep_graph = self.reuse_forward and not lagged
        w_old = self.lambdas
        # The forward whose gradient becomes the real update runs on the module (BatchNorm running
        # statistics update once); otherwise it is functional and the fresh forward updates them.
        inner = inner_pass(
            self.model,
            self.spec,
            self.layout,
            x_tr,
            y_tr,
            w_old,
            mode=self.mode,
            functional=not (lagged or self.reuse_forward),
            keep_graph=keep_graph,
            into_grad=persistent,
            amp_dtype=self.amp_dtype,
            backend=self.backend,
        )
        self._check_finite(inner.per_task)
        self._average_grads(persistent, "the virtual step's gradient", inner.grads)
        t = self._tick(timings, "inner", t)

        rule = VirtualStep.from_optimizer(self.optimizer, self.layout)
        hg = hypergradient_from(
            self.model,
            self.spec,
            self.layout,
            rule,
            inner,
            x_tr,
            y_tr,
            x_val,
            y_val,
            mode=self.mode,
            radius=self.radius,
            batched=self.batched_pair,
            keep_graph=keep_graph,
            consume_grads=not lagged,
            v_out=self._v_buffer(),
            pair_out=self._pair_buffer(),
            amp_dtype=self.amp_dtype,
            backend=self.backend,
            sync=self.sync,
        )
        problem = hg.problem()
        self._warn_collapse(hg)
        t = self._tick(timings, "outer", t)

        if problem is None:
            self._update_lambda(hg.value)
        else:
            warnings.warn(f"step {self.steps + 1}: outer update skipped, lambda unchanged: {problem}", stacklevel=2)
        w_new = self.lambdas
        t = self._tick(timings, "lambda", t)

        g_in_grad = persistent and self.mode != "unroll"  # g, then theta', was written to .grad
        if lagged:
            if not g_in_grad:
                for p, g in zip(self.layout.params, inner.grads):
                    p.grad = g.detach()
        else:
            if g_in_grad:
                self._grad_flat.zero_()  # it holds theta' now; the real backward accumulates here
            if self.reuse_forward:
                inner.per_task.backward(w_new.to(inner.per_task.dtype))
            else:
                fresh = forward_losses(
                    self.model, self.spec, x_tr, y_tr, amp_dtype=self.amp_dtype, backend=self.backend
                )
                fresh.backward(w_new.to(fresh.dtype))
            self._average_grads(persistent, "the real update's gradient")
        del inner
        self._real_update()
        self.steps += 1
        t = self._tick(timings, "update", t)
        timings["total"] = t - start
        return StepRecord(
            self.steps, hg.per_task, w_new, hg.value.detach(), float(hg.eps), float(hg.outer_loss), problem, timings
        )

    def _warn_collapse(self, hg: Hypergradient) -> None:
        if hg.collapsed is None or self._warned_collapse:
            return
        frac = float(hg.collapsed)
        if frac > COLLAPSE_WARNING:
            self._warned_collapse = True
            warnings.warn(
                f"fd hypergradient under {self.amp_dtype or self.layout.dtype}: theta+ and theta- round to the same "
                f"values in {100 * frac:.0f}% of the perturbed entries (eps = {float(hg.eps):.3g}), so the finite "
                "difference is mostly rounding; use mode='jvp' (exact, one forward-mode pass) or a larger radius",
                stacklevel=3,
            )

    # --- diagnostics ----------------------------------------------------------------------
    def check_hypergrad(self, batch_tr, batch_val) -> HypergradCheck:
        """The three hypergradient estimates at the current theta and lambda, and their relative
        errors against ``unroll``; the model, optimizer and random streams are left untouched."""
        x_tr, y_tr = self._to_device(batch_tr, "training batch")
        x_val, y_val = self._to_device(batch_val, "validation batch")
        return check_hypergrad(
            self.model,
            self.spec,
            (x_tr, y_tr),
            (x_val, y_val),
            self.lambdas,
            self.optimizer,
            radius=self.radius,
            batched=self.batched_pair,
            amp_dtype=self.amp_dtype,
            backend=self.backend,
        )

    # --- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly: step count, model, optimizer,
        scheduler, lambda and its optimizer, the random streams, and the configuration."""
        device = self.layout.device
        return {
            "steps": self.steps,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "lambda_raw": self._raw.detach().clone(),
            "lambda_optimizer": self.lambda_optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "config": {
                "mode": self.mode,
                "parametrization": self.parametrization,
                "outer_every": self.outer_every,
                "radius": self.radius,
                "reuse_forward": self.reuse_forward,
                "update_order": self.update_order,
            },
            "spec": self.spec.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (also the global random streams, so dropout masks
        continue where they left off)."""
        missing = {"steps", "model", "optimizer", "lambda_raw", "lambda_optimizer", "spec"} - set(state)
        if missing:
            raise ValueError(f"not a BilevelTrainer state: missing {sorted(missing)}")
        names = [t["name"] for t in state["spec"]["tasks"]]
        if names != list(self.spec.names):
            raise ValueError(f"checkpoint tasks {names} differ from this trainer's tasks {list(self.spec.names)}")
        saved = state.get("config", {}).get("parametrization", self.parametrization)
        if saved != self.parametrization:
            raise ValueError(
                f"checkpoint lambda uses the {saved!r} parametrisation, this trainer {self.parametrization!r}"
            )
        if (self.scheduler is None) != (state.get("scheduler") is None):
            raise ValueError("checkpoint and trainer disagree on having a scheduler")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        with torch.no_grad():
            self._raw.copy_(state["lambda_raw"])
        self.lambda_optimizer.load_state_dict(state["lambda_optimizer"])
        self.steps = int(state["steps"])
        if state.get("rng_cpu") is not None:
            torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and self.layout.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.layout.device)
