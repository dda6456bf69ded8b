"""The configuration of a pretraining run, with the paper's defaults, and its ``config.json``.

Fields split in two: those that shape the run's results (data, model, optimiser, schedule, seed) are
fixed for the life of a run directory, and a resumed run must not change them (except that it may lengthen
``epochs``: the cosine schedule is then stretched to the new length); the rest say how it executes
(device, precision, workers, logging, when to stop and checkpoint) and may differ on resume.

This module is plain data (no torch): the command line reads its defaults and choices for ``--help``.
Where each default comes from is in docs/defaults.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bfdkern.atomic import atomic_write_text
from bfdkern.bilevel.choices import MODES
from bfdkern.data.choices import FACE_DETECTOR_NAMES
from bfdkern.models.choices import BACKBONES, check_init, default_init
from bfdkern.tasks import ORDINAL_LEVELS, TaskSpec, blades_spec

CONFIG_NAME = "config.json"
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "bf16")
"""Compute precision of the forwards: ``fp32`` (the parameters' dtype) or ``bf16`` (bfloat16 autocast)."""
LOGGERS = ("csv", "tensorboard", "wandb")
"""Where the per-step scalars go: ``log.csv`` always, and TensorBoard or Weights & Biases besides."""
EXECUTION_FIELDS = (
    "device",
    "workers",
    "max_steps",
    "checkpoint_every",
    "progress",
    "precision",
    "tf32",
    "compile",
    "logger",
)
"""Fields a resumed run may change; every other field is fixed by the run directory (``epochs`` may grow)."""
GROWING_FIELDS = ("epochs",)
"""Fields a resumed run may increase (not decrease)."""
COMPILE_UNROLL_ERROR = (
    "compile cannot be used with mode 'unroll': unroll differentiates through the virtual step twice (double "
    "backward), which torch.compile's graphs do not support; use mode 'jvp' (exact) or 'fd'"
)
LEGACY_ORDINAL_LEVELS = 1
"""``ordinal_levels`` of a config.json written before the field existed (one-column ordinal heads)."""


@dataclass
class PretrainConfig:
    """A BLADES pretraining run. Defaults are the paper's (docs/defaults.md gives each one's source):
    AdamW (lr 1e-5, weight decay 1e-3), cosine schedule over 20 epochs, batch 48, lambda initialised to 1
    and updated by Adam at 3e-4 every step with the ``fd`` hypergradient, 224 x 224 images, ResNet-50 with a
    768-d embedding, ordinal heads of 3 levels.

    Attributes:
        data: a folder of photos (scanned recursively) or a SQLite manifest from ``bfdkern index``.
        epochs: passes over the B_tr stream; the cosine schedule spans ``epochs`` x steps per epoch.
        batch_size: images per batch (B_tr and B_val alike).
        lr, weight_decay: AdamW on the encoder and heads.
        lambda_lr: Adam learning rate of the task weights lambda.
        lambda_init: initial value of every lambda.
        mode: hypergradient ``fd`` | ``jvp`` | ``unroll``.
        image_size: side of the square model input, pixels.
        backbone: ``resnet50`` | ``resnet18`` | ``small``.
        feature_dim: embedding size.
        init: where the weights start: ``random``, ``imagenet`` (torchvision's ImageNet weights; also
            ``imagenet:IMAGENET1K_V2``) or a file (a torchvision state dict, a bfdkern encoder, a BLADES, Zou25 or
            EAL checkpoint); see :mod:`bfdkern.models.weights`. None: the paper's, ``imagenet`` for the ResNets
            (``random`` for the small backbone).
        face_crop: crop detected faces (OpenCV Haar cascade, box enlarged 1.3x) instead of the centred square.
        val_fraction: fraction of the images held out for B_val only (0: both streams draw from all images,
            in different orders and with different manipulations).
        paired: each batch holds B/2 photos, each as its original and as one manipulated version (originals
            are still half the samples, each manipulation 1/8; see :func:`bfdkern.data.make_loaders`); False
            draws every sample independently.
        seed: model initialisation, sample draws and stream orders.
        dtype: parameter and input precision (``float64`` for verification).
        max_steps: stop after this many steps (None: run the schedule to its end); the schedule keeps its length.
        device: ``cpu``, ``cuda``, ``cuda:1`` ... (None: CUDA when available).
        workers: DataLoader worker processes per batch stream.
        checkpoint_every: write a checkpoint every this many steps (also at each epoch end, at the end and on
            Ctrl-C); 0 = only those.
        progress: show progress bars.
        outer_every: update lambda every k-th step (the steps between are plain weighted steps).
        fixed_lambda: keep every lambda at ``lambda_init`` (no bi-level update; the equal-weight ablation).
        tasks: the pretext tasks trained, by name (None: all of :func:`~bfdkern.tasks.blades_spec`); must keep
            the outer task ``manipulated``. Used by the task ablations and Zou25.
        ordinal_levels: columns of each ordinal head: L >= 2 levels scored as the expected level of their
            softmax (BLADES: 3), or 1 raw score (Zou25).
        precision: ``fp32`` or ``bf16`` (bfloat16 autocast of the forwards; parameters, optimizer state and the
            ``fd`` perturbation stay float32, and the trainer warns when theta+ and theta- collapse in bf16).
        tf32: allow TF32 tensor cores for float32 matmuls and convolutions (CUDA; no effect on the CPU).
        compile: ``torch.compile`` the model's forward (not with ``mode="unroll"``).
        logger: ``csv`` (``log.csv`` only), ``tensorboard`` (also ``RUN_DIR/tensorboard``) or ``wandb`` (also
            Weights & Biases, when the ``wandb`` package is installed).
        face_detector: what finds faces for ``face_crop`` when the data has no boxes (found once and stored
            in the manifest): ``auto`` (MediaPipe when installed, else Haar), ``haar`` or ``mediapipe``.
        boxes: a face-box table (FDF's ``fdf_metainfo.json``, a CSV or JSON of boxes or landmarks) stored into
            the manifest and used for the crops and the mouth and eye manipulations.
        vocabulary: categorical task -> class names of its head, when the labels name another vocabulary
            than bfdkern's (a manifest imported from the official BLADES JSON; set from the manifest).
    """

    data: str = ""
    epochs: int = 20
    batch_size: int = 48
    lr: float = 1e-5
    weight_decay: float = 1e-3
    lambda_lr: float = 3e-4
    lambda_init: float = 1.0
    mode: str = "fd"
    image_size: int = 224
    backbone: str = "resnet50"
    feature_dim: int = 768
    init: str | None = None
    face_crop: bool = False
    val_fraction: float = 0.0
    paired: bool = True
    seed: int = 0
    dtype: str = "float32"
    max_steps: int | None = None
    device: str | None = None
    workers: int = 2
    checkpoint_every: int = 500
    progress: bool = True
    outer_every: int = 1
    fixed_lambda: bool = False
    tasks: list[str] | None = None
    ordinal_levels: int = ORDINAL_LEVELS
    precision: str = "fp32"
    tf32: bool = False
    compile: bool = False
    logger: str = "csv"
    face_detector: str = "auto"
    boxes: str | None = None
    vocabulary: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field out of range."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "feature_dim": self.feature_dim}
        for name, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if int(self.image_size) < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}")
        for name in ("lr", "lambda_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {self.backbone!r}")
        if self.init is None:
            self.init = default_init(self.backbone)
        check_init(self.init, self.backbone)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if int(self.workers) < 0 or int(self.checkpoint_every) < 0:
            raise ValueError(f"workers and checkpoint_every must be >= 0, got {self.workers}, {self.checkpoint_every}")
        if int(self.outer_every) < 1:
            raise ValueError(f"outer_every must be >= 1, got {self.outer_every}")
        if int(self.ordinal_levels) < 1:
            raise ValueError(f"ordinal_levels must be >= 1 (1: a raw score), got {self.ordinal_levels}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "bf16" and self.dtype != "float32":
            raise ValueError(f"precision 'bf16' autocasts float32 parameters; dtype is {self.dtype!r}")
        if self.logger not in LOGGERS:
            raise ValueError(f"logger must be one of {list(LOGGERS)}, got {self.logger!r}")
        if self.compile and self.mode == "unroll":
            raise ValueError(COMPILE_UNROLL_ERROR)
        if self.paired and int(self.batch_size) % 2:
            raise ValueError(f"batch_size {self.batch_size}: paired batches need an even batch size (or unpaired)")
        if self.face_detector not in FACE_DETECTOR_NAMES:
            raise ValueError(f"face_detector must be one of {list(FACE_DETECTOR_NAMES)}, got {self.face_detector!r}")
        if self.tasks is not None:
            self.tasks = list(self.tasks)
            self.task_spec()

    def task_spec(self) -> TaskSpec:
        """The spec of the trained tasks: :func:`~bfdkern.tasks.blades_spec`, or its subset ``tasks``.
        Raises ValueError for unknown names or a subset without an outer task."""
        spec = blades_spec(ordinal_levels=int(self.ordinal_levels), classes=self.vocabulary)
        if self.tasks is None:
            return spec
        unknown = sorted(set(self.tasks) - set(spec.names))
        if unknown:
            raise ValueError(f"tasks: unknown task names {unknown} (known: {list(spec.names)})")
        sub = spec.subset(self.tasks)
        if not sub.outer_indices:
            outer = [spec.names[i] for i in spec.outer_indices]
            raise ValueError(f"tasks: {list(self.tasks)} drops the outer task {outer}, which lambda is learned for")
        return sub

    # --- files -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> PretrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming ``source``."""
        if "backbone_weights" in data:  # a run made before ``init``: its backbone file, else random weights
            data = dict(data)
            weights = data.pop("backbone_weights")
            data.setdefault("init", weights or "random")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown configuration keys {unknown} (known: {sorted(known)})")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``RUN_DIR/config.json`` atomically. Returns its path."""
        return atomic_write_text(
            Path(run_dir) / CONFIG_NAME, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        )

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> PretrainConfig:
        """Read ``RUN_DIR/config.json``."""
        path = Path(run_dir) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such run configuration (is {run_dir} a pretraining run directory?)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        data.setdefault("ordinal_levels", LEGACY_ORDINAL_LEVELS)
        return cls.from_dict(data, source=str(path))

    def resumed_with(self, overrides: dict) -> PretrainConfig:
        """This run's configuration with ``overrides`` applied for a resumed run: execution fields may change and
        ``epochs`` may grow; a different value of any other field is an error (it would not continue the same
        run)."""
        data = self.to_dict()
        conflicts = []
        for name, value in overrides.items():
            if name in EXECUTION_FIELDS or value == data.get(name):
                continue
            if name in GROWING_FIELDS and value > data[name]:
                continue
            grow = "; a resumed run may lengthen it, not shorten it" if name in GROWING_FIELDS else ""
            conflicts.append(f"{name} {value!r} (the run has {data[name]!r}{grow})")
        if conflicts:
            raise ValueError(
                "a resumed run keeps its configuration; these options differ from it: " + ", ".join(conflicts)
            )
        data.update(overrides)
        return PretrainConfig.from_dict(data)
