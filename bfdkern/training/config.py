"""The configuration of a pretraining run, with the paper's defaults, and its ``config.json``.

Fields split in two: those that shape the run's results (data, model, optimiser, schedule, seed) are
fixed for the life of a run directory, and a resumed run must not change them; the rest say how it
executes (device, workers, when to stop and checkpoint) and may differ on resume.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bfdkern.bilevel.hypergradient import MODES
from bfdkern.models import BACKBONES
from bfdkern.tasks import TaskSpec, blades_spec

CONFIG_NAME = "config.json"
DTYPES = ("float32", "float64")
EXECUTION_FIELDS = ("device", "workers", "max_steps", "checkpoint_every", "progress")
"""Fields a resumed run may change; every other field is fixed by the run directory."""


@dataclass
class PretrainConfig:
    """A BLADES pretraining run. Defaults are the paper's: AdamW (lr 1e-5, weight decay 1e-3), cosine
    schedule over 20 epochs, batch 48, lambda by Adam at 3e-4 with the ``fd`` hypergradient, 224 x 224
    images, ResNet-50 with a 768-d embedding.

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
        from bfdkern.models.weights import check_init, default_init

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
        if self.tasks is not None:
            self.tasks = list(self.tasks)
            self.task_spec()

    def task_spec(self) -> TaskSpec:
        """The spec of the trained tasks: :func:`~bfdkern.tasks.blades_spec`, or its subset ``tasks``.
        Raises ValueError for unknown names or a subset without an outer task."""
        spec = blades_spec()
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
        path = Path(run_dir) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

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
        return cls.from_dict(data, source=str(path))

    def resumed_with(self, overrides: dict) -> PretrainConfig:
        """This run's configuration with ``overrides`` applied for a resumed run: execution fields may change;
        a different value of any other field is an error (it would not continue the same run)."""
        data = self.to_dict()
        conflicts = [
            f"{name} {value!r} (the run has {data[name]!r})"
            for name, value in overrides.items()
            if name not in EXECUTION_FIELDS and value != data.get(name)
        ]
        if conflicts:
            raise ValueError(
                "a resumed run keeps its configuration; these options differ from it: " + ", ".join(conflicts)
            )
        data.update(overrides)
        return PretrainConfig.from_dict(data)
