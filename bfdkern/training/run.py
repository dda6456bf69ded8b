"""The pretraining run: photos -> :class:`~bfdkern.data.FaceDataset` -> two batch streams ->
:class:`~bfdkern.bilevel.BilevelTrainer` -> ``RUN_DIR/encoder.pt``, with a run directory that can be
resumed exactly.

``RUN_DIR`` holds ``config.json``, ``checkpoint.pt`` (trainer state, stream positions, random states;
written atomically every ``checkpoint_every`` steps, at each epoch end, at the end and on Ctrl-C),
``log.csv`` (one row a step), ``chance.json`` (each task's chance level on the first batches),
``lambda.png`` and ``losses.png``, ``skipped.csv`` (images the dataset could not use) and, at the end,
``encoder.pt`` (:func:`bfdkern.models.save_model`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bfdkern.atomic import DiskFull, atomic_write_text, disk_full_named
from bfdkern.bilevel import BilevelTrainer
from bfdkern.bilevel.distributed import init_from_environment, is_main_process, rank_device
from bfdkern.data import FaceDataset, make_loaders
from bfdkern.data.face_index import manifest_vocabulary
from bfdkern.devices import resolve_device
from bfdkern.models import build_model, save_model
from bfdkern.models.encoder import CHECKPOINT_NAME as ENCODER_NAME
from bfdkern.tasks import TaskSpec
from bfdkern.training.chance import chance_losses, is_learned
from bfdkern.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, set_random_states
from bfdkern.training.config import CONFIG_NAME, PretrainConfig
from bfdkern.training.log import LOG_NAME, TENSORBOARD_DIR, WANDB_ID_NAME, StepLog, check_logger, open_sink, read_log
from bfdkern.training.plots import LAMBDA_PLOT, LOSS_PLOT, plot_lambdas, plot_losses
from bfdkern.training.rundir import RunLock, remove_files, remove_leftovers
from bfdkern.training.streams import BatchStream

CHANCE_NAME = "chance.json"
SKIPPED_NAME = "skipped.csv"
ATTEMPT_FILES = (
    LOG_NAME,
    CHANCE_NAME,
    SKIPPED_NAME,
    LAMBDA_PLOT,
    LOSS_PLOT,
    TENSORBOARD_DIR,
    WANDB_ID_NAME,
    ENCODER_NAME,
)
"""Files of an attempt that saved no checkpoint; a fresh start in its folder removes them."""
CHANCE_BATCHES = 8
"""Training batches whose targets set each task's chance level."""


@dataclass
class PretrainResult:
    """What a call of :func:`pretrain` did.

    Attributes:
        run_dir: the run directory.
        steps: steps taken by the run so far (all sessions).
        total_steps: the schedule's length (epochs x steps per epoch); ``stop_step`` is where this call stops.
        status: ``finished`` (reached ``stop_step``), ``interrupted`` (Ctrl-C; checkpoint saved) or ``aborted``
            (a second Ctrl-C during a step; the last checkpoint is kept).
        encoder: ``RUN_DIR/encoder.pt`` when finished.
        lambdas: [K] task weights now; ``initial_lambdas`` [K] at step 0.
        first_losses, last_losses: [K] mean per-task loss over the first and the last ``window`` logged steps.
        chance: [K] chance level of each task (NaN where unknown).
        plots: name -> PNG path.
        session_steps: steps taken by this call; ``step_seconds`` their median duration (the trainer's step);
            ``data_seconds`` the median wait for the two batches; ``wall_seconds`` this call's training loop.
        dataset: one line: images used and skipped; ``images`` the count used, ``skipped`` reason -> count.
    """

    run_dir: Path
    steps: int
    total_steps: int
    stop_step: int
    status: str
    encoder: Path | None = None
    lambdas: list[float] = field(default_factory=list)
    initial_lambdas: list[float] = field(default_factory=list)
    first_losses: list[float] = field(default_factory=list)
    last_losses: list[float] = field(default_factory=list)
    window: int = 0
    chance: list[float] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    session_steps: int = 0
    step_seconds: float = float("nan")
    data_seconds: float = float("nan")
    wall_seconds: float = 0.0
    dataset: str = ""
    images: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a pretraining run that can be resumed (a checkpoint). A folder whose start saved
    no checkpoint holds none: it is started again."""
    return (Path(path) / CHECKPOINT_NAME).is_file()


def stretch_cosine(scheduler, total_steps: int) -> float:
    """Make ``scheduler`` (a CosineAnnealingLR stepped once a step, at step t) span ``total_steps`` from now on,
    as if built with that length: the lr moves to the longer schedule's value at step t and follows it.
    Returns the first group's new lr."""
    t, total = int(scheduler.last_epoch), int(total_steps)
    lrs = [
        scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * t / total)) / 2
        for base in scheduler.base_lrs
    ]
    scheduler.T_max = total
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)  # what get_last_lr() reports
    return lrs[0]


class InterruptGuard:
    """While active (main thread only), the first Ctrl-C only sets :attr:`requested`, so the loop finishes its
    step, saves a checkpoint and stops; a second Ctrl-C raises KeyboardInterrupt at once. Forked DataLoader
    workers inherit the handler and ignore the signal (the main process shuts them down)."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.requested = False
        self._previous = None
        self._pid = os.getpid()

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            return
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.echo("Ctrl-C: finishing this step, then saving a checkpoint (Ctrl-C again aborts at once)")

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _echo(message: str) -> None:
    tqdm.write(message, file=sys.stdout)


def _write_skipped(run_dir: Path, dataset) -> None:
    path = run_dir / SKIPPED_NAME
    if not dataset.skipped_files:
        path.unlink(missing_ok=True)
        return
    with disk_full_named(path), open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows(dataset.skipped_files)


def _window_means(log: dict[str, np.ndarray], spec: TaskSpec) -> tuple[list[float], list[float], int]:
    n = len(log.get("step", []))
    if n == 0:
        return [], [], 0
    w = max(1, min(50, n // 5))
    first = [float(np.nanmean(log[f"loss_{t}"][:w])) for t in spec.names]
    last = [float(np.nanmean(log[f"loss_{t}"][-w:])) for t in spec.names]
    return first, last, w


class Pretraining:
    """One pretraining session over a run directory (see :func:`pretrain`).

    Building it checks everything that can be checked before anything is written (the options, the device,
    the logger's package, the images, the model and its start weights, the checkpoint to resume from) while
    holding the run directory's lock (:class:`~bfdkern.training.rundir.RunLock`); only then does it write the
    run's files. A start that fails leaves the directory as it was (a folder it created is removed again).
    The lock is held until :meth:`run` ends, or :meth:`close`.
    """

    def __init__(
        self,
        config: PretrainConfig,
        run_dir: str | os.PathLike,
        *,
        resume: bool = False,
        spec: TaskSpec | None = None,
        echo: Callable[[str], None] | None = None,
    ):
        # Under torchrun: one process a rank; rank 0 alone logs, shows progress, holds the lock and writes files.
        self.sync = init_from_environment(config.device)
        self.main = is_main_process()
        self.rank, self.world_size = (self.sync.rank, self.sync.world_size) if self.sync else (0, 1)
        self.config, self.run_dir, self.echo = config, Path(run_dir), echo or _echo
        if not self.main:
            self.echo = lambda message: None
        if config.vocabulary is None and Path(config.data).is_file() and spec is None:
            config.vocabulary = manifest_vocabulary(config.data)
            if config.vocabulary is not None:  # labels imported from the official BLADES JSON
                self.echo(
                    f"data: the manifest's class labels name their own classes; the heads follow them: {config.vocabulary}"
                )
        self.spec = spec or config.task_spec()
        self.lock = RunLock(self.run_dir) if self.main else None
        self._matmul_precision: str | None = None
        try:
            if self.lock is not None:
                self.lock.acquire()
            resume = self._check_run_dir(resume)
            self._build(resume)
            if self.sync is not None:  # every rank has checked everything before rank 0 writes
                torch.distributed.barrier()
            if self.main:
                self._write_start_files(resume)
        except BaseException:
            self.close(failed=True)
            raise

    # --- the run directory ------------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool) -> bool:
        """Whether this session resumes: a checkpoint is needed for that, and a new run needs a folder without
        one. A folder whose earlier start saved no checkpoint is started again, with or without ``resume``."""
        checkpoint = self.run_dir / CHECKPOINT_NAME
        earlier = self._earlier_attempt = (self.run_dir / CONFIG_NAME).is_file()
        if resume and not checkpoint.is_file():
            if not earlier:
                raise FileNotFoundError(f"{checkpoint}: no checkpoint to resume from (no run was started here)")
            self.echo(
                f"{self.run_dir}: holds no checkpoint (its first start ended before saving one): starting it again "
                "from step 0 with its configuration"
            )
            return False
        if not resume and checkpoint.is_file():
            raise ValueError(
                f"{self.run_dir}: already holds a pretraining run; pass --resume to continue it, or choose another --out"
            )
        if not resume and earlier:
            self.echo(f"{self.run_dir}: an earlier start saved no checkpoint; starting again (its files are replaced)")
        return resume

    def _write_start_files(self, resume: bool) -> None:
        """The run's files at its start: leftovers of killed writes removed, the files of an earlier attempt that
        saved no checkpoint removed (a fresh start in a folder that held one), then config.json and skipped.csv.
        Files that no bfdkern run wrote are left alone."""
        removed = remove_leftovers(self.run_dir, (CHECKPOINT_NAME, CONFIG_NAME, *ATTEMPT_FILES))
        if removed:
            self.echo(f"removed {len(removed)} temporary file(s) of an interrupted write: {removed[0].name} ...")
        if not resume and self._earlier_attempt:
            remove_files(self.run_dir, ATTEMPT_FILES)
        self.config.save(self.run_dir)
        _write_skipped(self.run_dir, self.dataset)

    def close(self, failed: bool = False) -> None:
        """Release the run directory and the process-wide settings this session made (TF32). ``failed``: the
        start did not happen, so a folder this session created is removed when empty."""
        if self._matmul_precision is not None:
            torch.set_float32_matmul_precision(self._matmul_precision)
            self._matmul_precision = None
        if self.lock is not None:
            self.lock.release(failed=failed)

    # --- building the session -----------------------------------------------------------------------------
    def _build(self, resume: bool) -> None:
        config = self.config
        self.device = resolve_device(rank_device(config.device))
        self.dtype = getattr(torch, config.dtype)
        check_logger(config.logger)
        self.dataset = FaceDataset(
            config.data,
            self.spec,
            size=config.image_size,
            seed=config.seed,
            face_crop=config.face_crop,
            face_detector=config.face_detector,
            boxes=config.boxes,
            index_workers=config.workers,
            progress=config.progress and self.main,
        )
        self.echo(f"data: {self.dataset.summary()}")
        for report in self.dataset.face_reports:
            self.echo(f"data: {report}")
        if self.dataset.skipped_files:
            self.echo(f"data: the skipped files and why are listed in {self.run_dir / SKIPPED_NAME}")
        loaders = make_loaders(
            self.dataset,
            config.batch_size,
            seed=config.seed,
            num_workers=config.workers,
            val_fraction=config.val_fraction,
            paired=config.paired,
            pin_memory=self.device.type == "cuda",
        )
        share = {"rank": self.rank, "world_size": self.world_size}
        self.streams = {"tr": BatchStream(loaders[0], **share), "val": BatchStream(loaders[1], **share)}
        if self.sync is not None:
            self.echo(
                f"distributed: {self.world_size} processes ({torch.distributed.get_backend()}), each trains on "
                f"{config.batch_size // self.world_size} of every batch of {config.batch_size}"
            )
        self.steps_per_epoch = self.streams["tr"].batches_per_epoch
        self.total_steps = config.epochs * self.steps_per_epoch

        torch.manual_seed(config.seed)
        self.model = build_model(
            self.spec,
            backbone=config.backbone,
            feature_dim=config.feature_dim,
            init="random" if resume else config.init,  # a resumed run's weights come from its checkpoint
            input_size=config.image_size,
        ).to(self.device, self.dtype)
        self._execution_settings()
        if not resume:
            self.echo(f"init: {self.model.init_report}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)
        self.trainer = BilevelTrainer(
            self.model,
            self.spec,
            self.optimizer,
            self.scheduler,
            mode=config.mode,
            lambda_init=config.lambda_init,
            lambda_lr=config.lambda_lr,
            outer_every=0 if config.fixed_lambda else config.outer_every,  # 0: no outer update at all
            amp_dtype=torch.bfloat16 if config.precision == "bf16" else None,
        )
        self.initial_lambdas = self.trainer.lambdas.tolist()
        self.chance: list[float] | None = None
        self._chance_targets: list[torch.Tensor] = []
        self.checkpoint_step: int | None = None
        if resume:
            self._restore()
        self.positions = {name: s.position for name, s in self.streams.items()}

    def _execution_settings(self) -> None:
        """TF32, torch.compile and bf16: how the run executes (they may change on resume)."""
        config, cuda = self.config, self.device.type == "cuda"
        if config.tf32:
            self._matmul_precision = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("high")
            torch.backends.cudnn.allow_tf32 = True
            if not cuda:
                self.echo("tf32: no effect on the CPU (TF32 tensor cores are a CUDA feature)")
        if config.precision == "bf16":
            self.echo(
                "precision bf16: forwards under bfloat16 autocast; parameters, optimizer state and the fd "
                "perturbation stay float32 (a warning says when theta+ and theta- still collapse in bfloat16)"
            )
        if config.compile:
            self.model.compile()
            self.echo("compile: the model's forward is compiled with torch.compile (the first steps take longer)")

    # --- checkpoints -----------------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {"images": len(self.dataset), "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps}

    def _restore(self) -> None:
        path = self.run_dir / CHECKPOINT_NAME
        ckpt = load_checkpoint(path, map_location="cpu")
        extra = ckpt.get("extra", {})
        saved, now = extra.get("identity", {}), self._identity()
        if saved and (saved["images"], saved["steps_per_epoch"]) != (now["images"], now["steps_per_epoch"]):
            raise ValueError(
                f"{path}: the run was made with {saved['images']} images ({saved['steps_per_epoch']} steps per epoch), "
                f"the data now gives {now['images']} ({now['steps_per_epoch']}): the collection changed, so the run "
                "cannot continue exactly; start a new run directory"
            )
        self.trainer.load_state_dict(ckpt["trainer"])
        for name, (epoch, batch) in ckpt["streams"].items():
            self.streams[name] = BatchStream(
                self.streams[name].loader, epoch, batch, rank=self.rank, world_size=self.world_size
            )
        set_random_states(ckpt["random"])
        self.initial_lambdas = list(extra.get("initial_lambdas", self.initial_lambdas))
        chance = extra.get("chance")
        self.chance = None if chance is None else [float(v) for v in chance]
        self.checkpoint_step = self.trainer.steps
        self.echo(f"resumed {self.run_dir} at step {self.trainer.steps} (epoch {self.streams['tr'].epoch + 1})")
        before = int(saved.get("total_steps", self.total_steps))
        if before != self.total_steps:
            lr = stretch_cosine(self.scheduler, self.total_steps)
            self.echo(
                f"schedule lengthened: the cosine schedule now spans {self.total_steps} steps ({self.config.epochs} "
                f"epochs of {self.steps_per_epoch}), was {before}; lr at step {self.trainer.steps} is now {lr:.3g}"
            )

    def save_checkpoint(self) -> Path:
        """Write ``RUN_DIR/checkpoint.pt`` for the last completed step (rank 0 only: the replicas are identical;
        every rank reads the step checks first, so a failure on any rank stops the save). On a full disk:
        :class:`~bfdkern.atomic.DiskFull` naming the file and the space it needs; the previous checkpoint is kept."""
        self.trainer.check()
        path = self.run_dir / CHECKPOINT_NAME
        if not self.main:
            return path
        extra = {
            "identity": self._identity(),
            "config": self.config.to_dict(),
            "initial_lambdas": self.initial_lambdas,
            "chance": self.chance,
        }
        try:
            save_checkpoint(path, self.trainer.state_dict(), self.positions, extra)
        except DiskFull as exc:
            kept = (
                f"the checkpoint of step {self.checkpoint_step} is kept"
                if self.checkpoint_step is not None
                else "no checkpoint was saved yet"
            )
            raise DiskFull(
                path,
                exc.needed,
                exc.free,
                f"{kept}; free some space, then: bfdkern pretrain --out {self.run_dir} --resume",
            ) from None
        self.checkpoint_step = self.trainer.steps
        return path

    # --- the loop -----------------------------------------------------------------------------------------
    def _batch(self, name: str):
        x, y = self.streams[name].next()
        return x.to(self.dtype), y.to(self.dtype)

    def _collect_chance(self, targets: torch.Tensor, force: bool = False) -> None:
        if self.chance is not None:
            return
        if targets is not None:
            self._chance_targets.append(targets.detach().cpu())
        if self._chance_targets and (force or len(self._chance_targets) >= CHANCE_BATCHES):
            self.chance = chance_losses(self._chance_targets, self.spec).tolist()
            self._chance_targets = []
            if self.main:
                atomic_write_text(
                    self.run_dir / CHANCE_NAME, json.dumps(dict(zip(self.spec.names, self.chance)), indent=2) + "\n"
                )

    def _stop_requested(self, guard: InterruptGuard) -> bool:
        """Ctrl-C seen; under torch.distributed, by any rank (one number all-reduced a step, so every rank stops
        after the same step instead of one waiting for the others in an all-reduce)."""
        if self.sync is None:
            return guard.requested
        flag = torch.tensor([float(guard.requested)], device=self.device)
        self.sync._run(lambda: torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX), "the stop flag")
        guard.requested = bool(flag.item())
        return guard.requested

    def run(self, on_step: Callable | None = None, plots: bool = True) -> PretrainResult:
        """Train until ``max_steps`` or the schedule's end, or Ctrl-C. ``on_step(record)`` is called after each
        step (for callers that watch the run); ``plots=False`` skips the PNG files (a second or two each). The
        run directory's lock is released when it returns or raises."""
        try:
            return self._run(on_step, plots)
        finally:
            for stream in self.streams.values():
                stream.close()
            self.close()

    def _run(self, on_step: Callable | None, plots: bool) -> PretrainResult:
        cfg, trainer = self.config, self.trainer
        stop = self.total_steps if cfg.max_steps is None else min(int(cfg.max_steps), self.total_steps)
        log = None
        if self.main:
            sink = open_sink(cfg.logger, self.run_dir, cfg.to_dict(), resume_step=trainer.steps)
            try:
                log = StepLog(self.run_dir, self.spec, resume_step=trainer.steps, sink=sink)
            except BaseException:
                if sink is not None:
                    sink.close()
                raise
        step_s, data_s = [], []
        status, in_step = "finished", False
        bar = tqdm(
            total=stop,
            initial=min(trainer.steps, stop),
            desc="pretrain",
            unit="step",
            disable=not (cfg.progress and self.main),
            dynamic_ncols=True,
            file=sys.stderr,
        )
        start = time.perf_counter()
        self.model.train()
        try:
            with InterruptGuard(self.echo) as guard:
                try:
                    while trainer.steps < stop and not self._stop_requested(guard):
                        t0 = time.perf_counter()
                        try:
                            batch_tr, batch_val = self._batch("tr"), self._batch("val")
                        except RuntimeError:
                            if guard.requested:  # DataLoader workers that got the Ctrl-C have exited
                                break
                            raise
                        waited = time.perf_counter() - t0
                        lr = float(self.optimizer.param_groups[0]["lr"])
                        in_step = True
                        record = trainer.step(batch_tr, batch_val)
                        in_step = False
                        self.positions = {name: s.position for name, s in self.streams.items()}
                        epoch = self.positions["tr"][0]
                        if log is not None:
                            log.write(record, epoch, lr, waited)
                        step_s.append(record.timings.get("total", float("nan")))
                        data_s.append(waited)
                        self._collect_chance(batch_tr[1])
                        bar.set_postfix(
                            epoch=f"{epoch + 1}/{cfg.epochs}",
                            l1=f"{record.outer_loss or 0:.3f}",
                            lam=f"{float(record.lambdas.min()):.2f}..{float(record.lambdas.max()):.2f}",
                            refresh=False,
                        )
                        bar.update(1)
                        if on_step is not None:
                            on_step(record)
                        epoch_end = self.positions["tr"][1] == self.steps_per_epoch
                        every = cfg.checkpoint_every and trainer.steps % cfg.checkpoint_every == 0
                        if (epoch_end or every) and trainer.steps < stop:
                            self.save_checkpoint()
                except KeyboardInterrupt:
                    if in_step:
                        status = "aborted"
                    else:
                        guard.requested = True
                if guard.requested and status != "aborted":
                    status = "interrupted"
        finally:
            bar.close()
            if log is not None:
                log.close()
        wall = time.perf_counter() - start
        for stream in self.streams.values():
            stream.close()  # its worker processes stop before the files are written
        if self.dataset.vanished.total:
            self.echo(
                f"data: {self.dataset.vanished.total} images could not be read during training (deleted or changed "
                "since the start); the next image was served in their place"
            )
        if status == "aborted":
            self.echo(
                f"aborted during step {trainer.steps + 1}: the model is mid-update and is not saved; the last "
                f"checkpoint in {self.run_dir / CHECKPOINT_NAME} is kept"
            )
            return self._result(status, step_s, data_s, wall, plots=plots)
        self._collect_chance(None, force=True)
        self.save_checkpoint()
        encoder = None
        if status == "finished" and self.main:
            encoder = save_model(
                self.run_dir / ENCODER_NAME,
                self.model,
                extra={
                    "steps": trainer.steps,
                    "lambdas": trainer.lambdas.tolist(),
                    "tasks": list(self.spec.names),
                    "pretrain_config": self.config.to_dict(),
                },
            )
        result = self._result(status, step_s, data_s, wall, encoder, plots=plots)
        if status == "interrupted":
            self.echo(
                f"interrupted at step {trainer.steps}: checkpoint saved to {self.run_dir / CHECKPOINT_NAME}; "
                f"continue with: bfdkern pretrain --out {self.run_dir} --resume"
            )
        return result

    def _result(self, status, step_s, data_s, wall, encoder=None, plots: bool = True) -> PretrainResult:
        pngs = {}
        log_path = self.run_dir / LOG_NAME
        log = read_log(log_path) if self.main and log_path.is_file() else {}
        if plots and len(log.get("step", [])):
            chance = None if self.chance is None else np.asarray(self.chance, dtype=np.float64)
            with disk_full_named(self.run_dir / LAMBDA_PLOT):
                pngs["lambda"] = plot_lambdas(log, self.spec, self.run_dir / LAMBDA_PLOT)
            with disk_full_named(self.run_dir / LOSS_PLOT):
                pngs["losses"] = plot_losses(log, self.spec, self.run_dir / LOSS_PLOT, chance)
        first, last, window = _window_means(log, self.spec)
        return PretrainResult(
            run_dir=self.run_dir,
            steps=self.trainer.steps,
            total_steps=self.total_steps,
            stop_step=self.total_steps
            if self.config.max_steps is None
            else min(self.config.max_steps, self.total_steps),
            status=status,
            encoder=encoder,
            lambdas=self.trainer.lambdas.tolist(),
            initial_lambdas=list(self.initial_lambdas),
            first_losses=first,
            last_losses=last,
            window=window,
            chance=list(self.chance) if self.chance is not None else [float("nan")] * self.spec.num_tasks,
            plots=pngs,
            session_steps=len(step_s),
            step_seconds=float(np.median(step_s)) if step_s else float("nan"),
            data_seconds=float(np.median(data_s)) if data_s else float("nan"),
            wall_seconds=wall,
            dataset=self.dataset.summary(),
            images=len(self.dataset),
            skipped=dict(self.dataset.skipped),
        )


def pretrain(
    config: PretrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    spec: TaskSpec | None = None,
    echo: Callable[[str], None] | None = None,
    on_step: Callable | None = None,
    plots: bool = True,
) -> PretrainResult:
    """Run (or, with ``resume``, continue) BLADES pretraining of ``config`` in ``run_dir``.

    A new run refuses a directory that already holds one; a resumed run continues exactly where its
    checkpoint left it (same batches, same random numbers, same schedule). See the module docstring for the
    files. Returns a :class:`PretrainResult`; ``echo`` receives the progress messages (default: stdout).
    """
    return Pretraining(config, run_dir, resume=resume, spec=spec, echo=echo).run(on_step=on_step, plots=plots)


def format_losses(result: PretrainResult, spec: TaskSpec) -> str:
    """A table: per task, the loss over the first and last steps, its chance level, whether it is learned
    (clearly below chance), and lambda."""
    lines = [f"{'task':<18}{'loss first':>11}{'loss last':>11}{'chance':>9}  {'learned':<8}{'lambda':>15}"]
    for k, name in enumerate(spec.names):
        first = result.first_losses[k] if result.first_losses else float("nan")
        last = result.last_losses[k] if result.last_losses else float("nan")
        chance = result.chance[k]
        learned = ("yes" if is_learned(last, chance) else "no") if np.isfinite(chance) else "n/a"
        lam = f"{result.initial_lambdas[k]:.3f} -> {result.lambdas[k]:.3f}"
        lines.append(f"{name:<18}{first:>11.4f}{last:>11.4f}{chance:>9.4f}  {learned:<8}{lam:>15}")
    return "\n".join(lines)
