"""BilevelTrainer: multi-task training whose task weights lambda are learned by bi-level optimisation.

Every outer step is the paper's five steps (:meth:`BilevelTrainer.step`):

1. g = grad_theta sum_k lambda_k l_k(B_tr; theta), the virtual step's gradient;
2. theta' = theta - alpha (g + wd theta) and v = grad_theta' l_1(B_val; theta');
3. the hypergradient h = d l_1(theta') / d lambda by ``fd`` | ``jvp`` | ``unroll`` (:mod:`bfdkern.bilevel.modes`);
4. lambda <- Adam step on h (:class:`~bfdkern.bilevel.weights.TaskWeights`);
5. theta <- real optimizer step on sum_k lambda_k l_k(B_tr; theta) with the new lambda.

Cost, with f one forward and a backward about 2f: a plain weighted step is 3f. The paper order with
``reuse_forward`` (step 5 backpropagates the per-task vector kept from step 1's forward with the new
lambda: ``per_task.backward(new_lambda)``) is about 10f: forward + backward at theta, forward + backward at
theta', the paired forward (2f), the real backward. ``reuse_forward=False`` adds a fresh forward (11f).
``update_order="lagged"`` is a deviation from the paper: step 5 applies step 1's gradient (the old lambda)
as the real update, so the new lambda takes effect one step later; it saves the real backward (about 8f).

A step never waits for the device: what depends on device values (a non-finite loss, an unusable
hypergradient, invalid labels) is recorded as device flags (:mod:`bfdkern.bilevel.checks`) and read every
``check_every`` steps and at :meth:`BilevelTrainer.state_dict`; errors name the step where they occurred.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from bfdkern.bilevel.check import HypergradCheck, check_hypergrad
from bfdkern.bilevel.checks import Condition, DeferredChecks, StepConditions
from bfdkern.bilevel.config import TrainerConfig
from bfdkern.bilevel.distributed import UNROLL_ERROR, check_sync_batchnorm, sync_for
from bfdkern.bilevel.graphs import CapturedSteps
from bfdkern.bilevel.modes import PROBLEMS, Hypergradient, OuterStep, get_mode
from bfdkern.bilevel.objective import SpecObjective, as_objective, to_device
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.passes import forward_losses, inner_pass
from bfdkern.bilevel.rng import capturing
from bfdkern.bilevel.virtual_step import VirtualStep
from bfdkern.bilevel.weights import TaskWeights
from bfdkern.bilevel.workspace import StepWorkspace

COLLAPSE_WARNING = 0.5
"""Warn when more than this fraction of the perturbed entries collapse in the compute dtype."""
CHECK_EVERY_ACCELERATOR = 50
"""Default steps between reads of the device flags on a GPU or under torch.distributed (a single-process
CPU run reads them every step)."""


@dataclass
class StepRecord:
    """What one :meth:`BilevelTrainer.step` did (tensors detached, on the model's device; reading them on
    the host is the caller's choice).

    Attributes:
        step: steps taken so far, this one included.
        per_task: [K] per-task losses on B_tr at theta (before the update).
        lambdas: [K] task weights after this step's outer update.
        hypergrad: [K] d l_1(theta') / d lambda (None on a step without outer update).
        eps: 0-dim, the finite-difference step r / ||v|| (None without outer update).
        outer_loss: 0-dim, l_1(B_val; theta') (None without outer update).
        problems: [3] bool, why the outer update was withheld (see :attr:`skipped`); None without one.
        timings: seconds per phase (``inner``, ``outer``, ``lambda``, ``update``, ``total``) as the host saw
            them (device times only with ``sync_timings``).
    """

    step: int
    per_task: Tensor
    lambdas: Tensor
    hypergrad: Tensor | None = None
    eps: Tensor | None = None
    outer_loss: Tensor | None = None
    problems: Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> str | None:
        """Why the outer update was skipped (lambda unchanged), else None. Reads the device (one sync)."""
        if self.problems is None:
            return None
        return next((text for text, bad in zip(PROBLEMS, self.problems.tolist()) if bad), None)

    def as_dict(self) -> dict:
        """Plain Python values (lists and floats), for logs."""
        out = {"step": self.step, "per_task": self.per_task.tolist(), "lambdas": self.lambdas.tolist()}
        out["hypergrad"] = None if self.hypergrad is None else self.hypergrad.tolist()
        out["eps"] = None if self.eps is None else float(self.eps)
        out["outer_loss"] = None if self.outer_loss is None else float(self.outer_loss)
        out.update(skipped=self.skipped, timings=dict(self.timings))
        return out


class BilevelTrainer:
    """Trains ``model`` on sum_k lambda_k l_k while learning lambda by bi-level optimisation.

    Args:
        model: the multi-task model; train/eval mode is the caller's.
        objective: what is trained: an :class:`~bfdkern.bilevel.objective.Objective` (your own per-task
            losses, any batch and output structure), or a TaskSpec (the model returns packed logits
            [B, spec.num_columns], batches are (inputs, targets [B, J]); the fused loss). Its outer tasks
            form the validation objective l_1.
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
        backend: loss and perturbation backend of a TaskSpec objective (default by device).
        sync_timings: synchronise CUDA at phase boundaries so the timings are device times.
        contiguous_params: move the trainable parameters into one flat buffer (each becomes a view
            of it; same Parameter objects and values), so theta reaches the perturbation op
            without a copy. Move the model to its device before building the trainer.
        distributed: average over the ranks of torch.distributed (:mod:`bfdkern.bilevel.distributed`):
            None = when the model is wrapped in DistributedDataParallel (which is unwrapped) or a
            process group of several ranks is initialised; each rank passes its share of the batches.
        check_every: read the device flags (non-finite losses, skipped outer updates, invalid labels) every
            this many steps; warnings and errors are raised then, naming the step where they first held.
            Default: every step in a single CPU process (nothing to wait for), every 50 steps on a GPU (a
            read waits for the device) or under torch.distributed (a read is a collective).
        cuda_graph: capture a whole step as a CUDA graph after a few eager warm-up steps and replay it
            (:mod:`bfdkern.bilevel.graphs`): True refuses, with the reason, what cannot be captured;
            ``"auto"`` runs eagerly there instead (with a warning).
    """

    def __init__(
        self,
        model: nn.Module,
        objective,
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
        check_every: int | None = None,
        cuda_graph: bool | str = False,
    ):
        config = TrainerConfig(
            mode=mode,
            parametrization=parametrization,
            lambda_lr=lambda_lr,
            outer_every=outer_every,
            radius=radius,
            reuse_forward=reuse_forward,
            update_order=update_order,
            batched_pair=batched_pair,
            amp_dtype=amp_dtype,
            clip_grad_norm=clip_grad_norm,
            backend=backend,
            sync_timings=sync_timings,
            contiguous_params=contiguous_params,
            check_every=check_every,
            cuda_graph=cuda_graph,
        )
        self.mode = get_mode(config.mode)
        model, self.sync = sync_for(model, distributed)
        if self.sync is not None and not self.mode.distributed:
            raise ValueError(UNROLL_ERROR)
        self.objective = as_objective(objective, backend)
        if optimizer is None:
            optimizer = torch.optim.AdamW(
                [p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-3
            )
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.layout = ParamLayout.from_model(model, optimizer)
        device = self.layout.device
        sync_bn = self.sync is not None and check_sync_batchnorm(model, self.mode, config.batched_pair)
        if config.batched_pair is None:
            config = dataclasses.replace(config, batched_pair=device.type == "cuda" and not sync_bn)
        if config.check_every is None:  # a read costs nothing on one CPU; a GPU waits, ranks all-reduce
            every = 1 if device.type == "cpu" and self.sync is None else CHECK_EVERY_ACCELERATOR
            config = dataclasses.replace(config, check_every=every)
        self.config = config
        if config.contiguous_params:
            self.layout = self.layout.make_contiguous()
        if self.sync is not None:  # every replica starts from the first rank's theta, as DDP does
            theta = [self.layout.flat] if self.layout.aliased() else list(self.layout.params)
            with torch.no_grad():
                self.sync.broadcast_(theta, "the initial parameters")
            self.sync.broadcast_buffers_(model)
        self.weights = TaskWeights(
            self.objective.num_tasks,
            lambda_init,
            parametrization=config.parametrization,
            lr=config.lambda_lr,
            dtype=self.layout.master_dtype,
            device=device,
        )
        self.workspace = StepWorkspace(self.layout, pair=self.mode.needs_pair_workspace)
        self.checks = DeferredChecks()
        self.steps = 0
        self._step_count = torch.zeros((), dtype=torch.int64, device=device)  # the step number, on the device
        self._failure: Exception | None = None
        self._warned: set[str] = set()
        self.graphs = CapturedSteps.for_trainer(self) if config.cuda_graph else None

    @property
    def spec(self):
        """The TaskSpec of a spec objective (None for another objective)."""
        return self.objective.spec if isinstance(self.objective, SpecObjective) else None

    @property
    def lambdas(self) -> Tensor:
        """[K] the current task weights lambda (detached)."""
        return self.weights.value

    # --- one step -------------------------------------------------------------------------------------
    def step(self, batch_tr, batch_val) -> StepRecord:
        """One training step: an outer (bi-level) step every ``outer_every`` steps, else a plain weighted
        step with the current lambda. No host synchronisation, except the flag read every ``check_every``
        steps (:meth:`check`).

        Args:
            batch_tr: training batch (for a TaskSpec: (inputs, targets [B, J])).
            batch_val: validation batch; needs labels of the outer task(s).

        Returns:
            :class:`StepRecord`. lambda is never set to a non-finite value: an unusable hypergradient
            (||v|| = 0, NaN) withholds the outer update (reported as a warning).
        """
        if self._failure is not None:
            raise self._failure
        outer = self.config.outer_every != 0 and self.steps % self.config.outer_every == 0
        record = self.graphs.step(outer, batch_tr, batch_val) if self.graphs is not None else None
        if record is None:
            device = self.layout.device
            record = self.run_step(outer, to_device(batch_tr, device), to_device(batch_val, device))
        self.steps += 1
        if self.steps % self.config.check_every == 0:
            self.check()
        return record

    def run_step(self, outer: bool, batch_tr, batch_val) -> StepRecord:
        """The step on batches already on the device: what a CUDA graph captures (no host reads)."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        self._step_count.add_(1)
        conditions = StepConditions()
        batch_tr, checks = self.objective.prepare(batch_tr, "training batch")
        if checks is not None:
            conditions.add(checks.conditions, checks.flags)
        if self.sync is not None:
            self.sync.broadcast_buffers_(self.model)
        grads_bound = self.workspace.bind_grads(self.optimizer)
        if outer:
            batch_val, checks = self.objective.prepare(batch_val, "validation batch", outer=True)
            if checks is not None:
                conditions.add(checks.conditions, checks.flags)
            record = self._outer_step(batch_tr, batch_val, grads_bound, conditions, timings, start)
        else:
            record = self._plain_step(batch_tr, grads_bound, conditions, timings, start)
        self.checks.record(self._step_count, conditions)
        return record

    def _plain_step(self, batch_tr, grads_bound: bool, conditions, timings: dict, start: float) -> StepRecord:
        lambdas = self.lambdas
        per_task = forward_losses(self.model, self.objective, batch_tr, amp_dtype=self.config.amp_dtype)
        self._note_losses(per_task, conditions)
        per_task.backward(lambdas.to(per_task.dtype))
        self._average_grads(grads_bound, "the weighted gradient")
        self._optimizer_step()
        self._tick(timings, "total", start)
        return StepRecord(self.steps + 1, per_task.detach(), lambdas, timings=timings)

    def _outer_step(self, batch_tr, batch_val, grads_bound: bool, conditions, timings: dict, start: float):
        cfg, layout = self.config, self.layout
        lagged = cfg.update_order == "lagged"
        keep_graph = cfg.reuse_forward and not lagged
        lambdas = self.lambdas

        # 1. g = grad_theta sum_k lambda_k l_k(B_tr; theta). The forward whose gradient becomes the real
        #    update runs on the module (BatchNorm statistics update once); otherwise it is functional.
        inner = inner_pass(
            self.model,
            self.objective,
            layout,
            batch_tr,
            lambdas,
            differentiable=self.mode.differentiates_inner_gradient,
            functional=not (lagged or cfg.reuse_forward),
            keep_graph=keep_graph,
            into_grad=grads_bound,
            amp_dtype=cfg.amp_dtype,
        )
        self._note_losses(inner.per_task, conditions)
        self._average_grads(grads_bound, "the virtual step's gradient", inner.grads)
        t = self._tick(timings, "inner", start)

        # 2.-3. theta' = theta - alpha (g + wd theta), v = grad_theta' l_1(B_val; theta'), the hypergradient.
        outer = OuterStep(
            self.model,
            self.objective,
            layout,
            VirtualStep.from_optimizer(self.optimizer, layout),
            inner,
            batch_tr,
            batch_val,
            radius=cfg.radius,
            batched_pair=cfg.batched_pair,
            keep_graph=keep_graph,
            consume_grads=not lagged,
            v_out=self.workspace.v_buffer(),
            pair_out=self.workspace.pair_buffer(),
            amp_dtype=cfg.amp_dtype,
            sync=self.sync,
        )
        hypergrad = self.mode.estimate(outer)
        if grads_bound and inner.grads is None:  # the mode wrote theta' over g
            self.workspace.holds = "theta'"
        problems = self._note_hypergradient(hypergrad, conditions)
        t = self._tick(timings, "outer", t)

        # 4. Adam on lambda (withheld on the device when the estimate is unusable).
        self.weights.update(hypergrad.value, apply=~problems.any())
        new_lambdas = self.lambdas
        t = self._tick(timings, "lambda", t)

        # 5. The real update of theta: with the new lambda (paper order) or step 1's gradient (lagged).
        self._update_gradient(inner, batch_tr, new_lambdas, grads_bound, lagged)
        del inner, outer
        self._optimizer_step()
        t = self._tick(timings, "update", t)
        timings["total"] = t - start
        return StepRecord(
            self.steps + 1,
            hypergrad.per_task,
            new_lambdas,
            hypergrad.value.detach(),
            hypergrad.eps,
            hypergrad.outer_loss,
            problems,
            timings,
        )

    def _update_gradient(self, inner, batch_tr, lambdas: Tensor, grads_bound: bool, lagged: bool) -> None:
        """Step 5's gradient in the parameters' ``.grad``: step 1's g (lagged order), or the gradient of
        sum_k lambda_k l_k with the new lambda (paper order), through the kept forward or a fresh one."""
        g_in_workspace = grads_bound and not self.mode.differentiates_inner_gradient  # g, then theta', went there
        if lagged:
            if not g_in_workspace:
                for p, g in zip(self.layout.params, inner.grads):
                    p.grad = g.detach()
            return
        if g_in_workspace:
            self.workspace.clear_for_update()  # it holds theta' now
        if self.config.reuse_forward:
            inner.per_task.backward(lambdas.to(inner.per_task.dtype))
        else:
            fresh = forward_losses(self.model, self.objective, batch_tr, amp_dtype=self.config.amp_dtype)
            fresh.backward(lambdas.to(fresh.dtype))
        self._average_grads(grads_bound, "the real update's gradient")

    def _average_grads(self, grads_bound: bool, what: str, grads: list[Tensor] | None = None) -> None:
        """Average the gradients over the ranks: the workspace's flat buffer when the gradients are bound to
        it (one all-reduce of N values), else ``grads`` (default: the parameters' ``.grad``). No-op without
        distributed."""
        if self.sync is None:
            return
        if grads_bound:
            self.sync.average_(self.workspace.grad, what)
            return
        if grads is None:
            for p in self.layout.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            grads = [p.grad for p in self.layout.params]
        self.sync.average_list_(grads, what)

    def _optimizer_step(self) -> None:
        if self.config.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.layout.params, self.config.clip_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def _tick(self, timings: dict, name: str, start: float) -> float:
        if self.config.sync_timings and self.layout.device.type == "cuda" and not capturing(self.layout.device):
            torch.cuda.synchronize(self.layout.device)
        now = time.perf_counter()
        timings[name] = now - start
        return now

    # --- device flags ---------------------------------------------------------------------------------
    def _note_losses(self, per_task: Tensor, conditions: StepConditions) -> None:
        template = (
            "the training loss is not finite for task(s) {items}: check the inputs for NaN/Inf or lower the "
            "learning rate (the update of that step was applied: continue from a checkpoint saved before it)"
        )
        names = self.objective.names
        conditions.add(
            [Condition(template, repr(n), FloatingPointError) for n in names], ~torch.isfinite(per_task.detach())
        )

    def _note_hypergradient(self, hypergrad: Hypergradient, conditions: StepConditions) -> Tensor:
        """Record why the estimate is unusable ([3] bool, returned; see ``PROBLEMS``) and the fd rounding
        collapse."""
        problems = hypergrad.problem_flags()
        conditions.add([Condition(f"outer update skipped, lambda unchanged: {p}") for p in PROBLEMS], problems)
        if hypergrad.collapsed is not None:
            dtype = self.config.amp_dtype or self.layout.dtype
            template = (
                f"fd hypergradient under {dtype}: theta+ and theta- round to the same values in {{percent}} of the "
                "perturbed entries, so the finite difference is mostly rounding; use mode='jvp' (exact, one "
                "forward-mode pass) or a larger radius"
            )
            collapsed = hypergrad.collapsed.reshape(1)
            conditions.add([Condition(template, once=True)], collapsed > COLLAPSE_WARNING, collapsed)
        return problems

    def check(self, all_ranks: bool = True) -> None:
        """Read the device flags now (one host sync): warn for what held since the last read, raise the
        first error (a non-finite training loss, invalid labels) naming the step where it occurred. After
        an error every step and :meth:`state_dict` raise it again. Under torch.distributed the flags of all
        ranks are combined (a collective: every rank must call it), unless ``all_ranks`` is False."""
        if self._failure is not None:
            raise self._failure
        for f in self.checks.read(self.sync if all_ranks else None):
            message = f"step {f.step}: {f.message}"
            if f.count > 1:
                message += f" ({f.count} steps since the last check)"
            if f.condition.error is not None:
                self._failure = f.condition.error(message)
                raise self._failure
            if f.condition.once:
                if f.message in self._warned:
                    continue
                self._warned.add(f.message)
            warnings.warn(message, stacklevel=3)

    # --- diagnostics ----------------------------------------------------------------------------------
    def check_hypergrad(self, batch_tr, batch_val) -> HypergradCheck:
        """The three hypergradient estimates at the current theta and lambda, and their relative
        errors against ``unroll``; the model, optimizer and random streams are left untouched."""
        cfg = self.config
        return check_hypergrad(
            self.model,
            self.objective,
            to_device(batch_tr, self.layout.device),
            to_device(batch_val, self.layout.device),
            self.lambdas,
            self.optimizer,
            radius=cfg.radius,
            batched=cfg.batched_pair,
            amp_dtype=cfg.amp_dtype,
        )

    # --- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly: step count, model, optimizer, scheduler,
        lambda and its Adam state, the random streams, and the configuration. Reads this rank's device flags
        first (:meth:`check`), so no checkpoint holds a state after a failed step; under torch.distributed,
        call ``check()`` on every rank before the first rank saves, to include the others' flags."""
        self.check(all_ranks=False)
        device = self.layout.device
        return {
            "steps": self.steps,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "lambda_raw": self.weights.raw.detach().clone(),
            "lambda_optimizer": self.weights.optimizer_state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "config": self.config.to_dict(),
            "tasks": list(self.objective.names),
            "spec": None if self.spec is None else self.spec.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output, also one written by an older version of the trainer (and the
        global random streams, so dropout masks continue where they left off)."""
        missing = {"steps", "model", "optimizer", "lambda_raw", "lambda_optimizer"} - set(state)
        if missing or ("tasks" not in state and "spec" not in state):
            raise ValueError(f"not a BilevelTrainer state: missing {sorted(missing) or ['tasks']}")
        names = state.get("tasks") or [t["name"] for t in state["spec"]["tasks"]]
        if list(names) != list(self.objective.names):
            raise ValueError(
                f"checkpoint tasks {list(names)} differ from this trainer's tasks {list(self.objective.names)}"
            )
        saved = TrainerConfig.from_dict(state.get("config") or {})  # older trainers saved six settings
        if saved.parametrization != self.config.parametrization:
            raise ValueError(
                f"checkpoint lambda uses the {saved.parametrization!r} parametrisation, this trainer "
                f"{self.config.parametrization!r}"
            )
        if (self.scheduler is None) != (state.get("scheduler") is None):
            raise ValueError("checkpoint and trainer disagree on having a scheduler")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.weights.load(state["lambda_raw"], state["lambda_optimizer"])
        self.steps = int(state["steps"])
        self._step_count.fill_(self.steps)
        self._failure = None
        self.checks = DeferredChecks()
        if self.graphs is not None:  # the optimizer's state tensors are new: capture again (after warm-up)
            self.graphs = CapturedSteps.for_trainer(self)
        if state.get("rng_cpu") is not None:
            torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and self.layout.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.layout.device)
