"""The BLADES encoder: a backbone with an embedding layer and packed linear heads for the task spec, and its
encoder files.

Input images are ``[B, 3, H, W]`` float RGB in ``[0, 1]`` (what :func:`bfdkern.data.transforms.to_tensor`
gives); the model applies its own mean/std normalisation (buffers ``mean`` and ``std``, saved with the
weights: ImageNet's for torchvision starts, CLIP's for the authors' weights), so every caller feeds the same.

* ``forward(x)`` -> logits ``[B, spec.num_columns]``: one ``nn.Linear`` over the embedding, its columns laid
  out as the spec packs them (an encoder imported without task heads has none).
* ``features(x)`` -> ``[B, feature_dim]``: the embedding, L2-normalised (what the detectors fit).

A new model starts from random init; :func:`bfdkern.models.build_model` starts it from ImageNet weights or a
file, :func:`load_model` restores an encoder file and :meth:`BladesModel.from_pretrained` an exported folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfdkern.atomic import atomic_torch_save
from bfdkern.models.architecture import BACKBONES, NORMALIZATION_BUFFERS, check_model_config
from bfdkern.models.files import (
    CHECKSUM_KEY,
    Fields,
    SavedFileError,
    state_dict_field,
    torch_load,
    verify_checksum,
    with_checksum,
)
from bfdkern.models.normalization import IMAGENET_MEAN, IMAGENET_STD, checked_statistics
from bfdkern.models.pretrained import WEIGHTS_FILE, read_pretrained, write_pretrained
from bfdkern.tasks import TaskSpec

CHECKPOINT_FORMAT = "bfdkern.model/2"
OLD_FORMATS = ("bfdkern.model/1",)
"""Earlier encoder file formats that still load (ImageNet statistics, no checksum)."""
CHECKPOINT_NAME = "encoder.pt"
"""The file a run directory keeps its encoder in."""


class SmallBackbone(nn.Module):
    """A tiny CNN for CPU runs on small images (64 x 64): four 3x3 conv-BN-ReLU blocks of stride 2 (widths
    w, 2w, 4w, 8w), then global average pooling. The first convolution sees every input pixel, so
    pixel-level traces (sensor noise, demosaicing, JPEG blocks) reach the deeper layers. Output ``[B, 8w]``."""

    def __init__(self, width: int = 16):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.out_dim = chans[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))


def _torchvision_resnet(name: str) -> nn.Module:
    import torchvision  # lazy: heavy (torchvision, ~1.4 s), only when a ResNet is built

    net = getattr(torchvision.models, name)(weights=None)
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


class BladesModel(nn.Module):
    """Encoder + packed linear heads for ``spec``.

    Args:
        spec: the task spec; the heads have ``spec.num_columns`` outputs in its packing order. None: no heads
            (an encoder imported for feature extraction only).
        backbone: ``"resnet50"`` (the paper's), ``"resnet18"``, or ``"small"`` (a tiny CNN for the CPU demo).
        feature_dim: size of the embedding (the ResNet's fc maps to it; 768 in the paper).
        mean, std: per-channel input statistics (default ImageNet's), applied to images in [0, 1].
        input_size: the square input side the weights were trained at, pixels (None: not recorded).

    The weights start random; :func:`bfdkern.models.build_model` starts them from ImageNet or a file.
    """

    def __init__(
        self,
        spec: TaskSpec | None,
        backbone: str = "resnet50",
        feature_dim: int = 768,
        *,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size: int | None = None,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}, expected one of {list(BACKBONES)}")
        if int(feature_dim) < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        if input_size is not None and int(input_size) < 8:
            raise ValueError(f"input_size must be >= 8 pixels or None, got {input_size}")
        mean, std = checked_statistics(mean, std, "BladesModel")
        self.spec = spec
        self.backbone_name = backbone
        self.feature_dim = int(feature_dim)
        self.input_size = None if input_size is None else int(input_size)
        self.backbone = SmallBackbone() if backbone == "small" else _torchvision_resnet(backbone)
        self.embed = nn.Linear(self.backbone.out_dim, self.feature_dim)
        self.heads = None if spec is None else nn.Linear(self.feature_dim, spec.num_columns)
        # Saved with the weights: the statistics belong to them (a resumed run or an encoder file keeps them).
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self._register_load_state_dict_pre_hook(_fill_normalization, with_module=True)

    @property
    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of the input normalisation, 3 floats each (the shortest decimals of the float32 values)."""
        return _decimals(self.mean), _decimals(self.std)

    def set_statistics(self, mean, std) -> None:
        """Set the input normalisation (the weights' own statistics)."""
        mean, std = checked_statistics(mean, std, "BladesModel")
        with torch.no_grad():
            self.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
            self.std.copy_(torch.tensor(std).view(1, 3, 1, 1))

    @property
    def config(self) -> dict:
        """What rebuilds this architecture (JSON-able): backbone, feature_dim, the spec (None without heads),
        the input statistics and size."""
        mean, std = self.statistics
        return {
            "backbone": self.backbone_name,
            "feature_dim": self.feature_dim,
            "spec": None if self.spec is None else self.spec.to_dict(),
            "mean": list(mean),
            "std": list(std),
            "input_size": self.input_size,
        }

    @classmethod
    def from_config(cls, config: dict) -> BladesModel:
        """A random-init model of the architecture :attr:`config` describes (TypeError / ValueError / KeyError
        for a config that does not describe one)."""
        spec = None if config.get("spec") is None else TaskSpec.from_dict(config["spec"])
        return cls(
            spec,
            backbone=config["backbone"],
            feature_dim=int(config["feature_dim"]),
            mean=config.get("mean", IMAGENET_MEAN),
            std=config.get("std", IMAGENET_STD),
            input_size=config.get("input_size"),
        )

    def embedding(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> [B, feature_dim] (not normalised)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(x.shape)}")
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.embed(self.backbone(x))

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> logits [B, spec.num_columns]."""
        if self.heads is None:
            raise RuntimeError("this encoder has no task heads (it was imported for features); use features(x)")
        return self.heads(self.embedding(x))

    def features(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> L2-normalised features [B, feature_dim] (for the detectors)."""
        return F.normalize(self.embedding(x), dim=1)

    # --- exported folders (config.json + model.safetensors) -----------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike, extra_config: dict | None = None) -> Path:
        """Write ``FOLDER/config.json`` and ``FOLDER/model.safetensors`` (see :mod:`bfdkern.models.pretrained`).
        Returns the folder."""
        return write_pretrained(folder, self.config, self.state_dict(), extra_config)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, map_location="cpu") -> BladesModel:
        """The model of a folder written by :meth:`save_pretrained` or ``bfdkern export``; the files are
        validated (structure, shapes, finiteness, checksum) and nothing is unpickled."""
        config, state, path = read_pretrained(folder)
        model = _model_from_config(config, state, path)
        load_fitting(model, state, path, f"BladesModel(backbone={config['backbone']!r})")
        return model.to(map_location)


def _decimals(t: Tensor) -> tuple[float, ...]:
    return tuple(float(str(np.float32(v))) for v in t.detach().float().flatten().tolist())


def _fill_normalization(module, state_dict, prefix, *args) -> None:
    """Files written before the statistics were saved with the weights used ImageNet's: keep the module's."""
    for name in NORMALIZATION_BUFFERS:
        state_dict.setdefault(prefix + name, getattr(module, name).detach().clone())


def save_model(path: str | os.PathLike, model: BladesModel, extra: dict | None = None) -> Path:
    """Write ``model`` (config, spec, weights, statistics) and ``extra`` (tensors, numbers, strings, lists, dicts
    only: it must load with ``weights_only=True``) to ``path`` atomically, with a checksum of the whole payload.
    Returns the path."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(with_checksum(payload), path)


def read_checkpoint(path_or_run_dir: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint dict (``format``, ``config``, ``state_dict``, ``extra``, ``path``) of an encoder file
    written by :func:`save_model`, or of ``RUN_DIR/encoder.pt``; loaded with ``weights_only=True`` and validated
    (structure, types, finite values, the checksum). A file of an older format is brought to this one.

    Raises FileNotFoundError, or :class:`~bfdkern.models.files.SavedFileError` (a ValueError) with one line
    naming the file and the field that is wrong."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    payload = torch_load(path, map_location, "checkpoint")
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt != CHECKPOINT_FORMAT and fmt not in OLD_FORMATS:
        found = fmt if isinstance(payload, dict) else type(payload).__name__
        raise SavedFileError(
            f"{path}: not a bfdkern model checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r}); "
            "the authors' checkpoints are imported with `bfdkern import-weights`"
        )
    fields = Fields(path, payload)
    if fmt == CHECKPOINT_FORMAT and CHECKSUM_KEY not in payload:
        fields.fail("checksum", "missing")
    verify_checksum(payload, path)
    config = check_model_config(fields, "config")
    state = state_dict_field(fields, "state_dict")
    if fmt in OLD_FORMATS:  # ImageNet statistics, not in the state dict
        for name, value in zip(NORMALIZATION_BUFFERS, (IMAGENET_MEAN, IMAGENET_STD)):
            state.setdefault(name, torch.tensor(value).view(1, 3, 1, 1))
        config.update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), input_size=config.get("input_size"))
    extra = fields.dict("extra", optional=True) or {}
    if "lambdas" in extra:
        fields.numbers("extra.lambdas")
    if "steps" in extra:
        fields.integer("extra.steps", minimum=0)
    if "tasks" in extra and not (isinstance(extra["tasks"], list) and all(isinstance(t, str) for t in extra["tasks"])):
        fields.fail("extra.tasks", "expected a list of task names")
    payload["extra"], payload["path"] = extra, str(path)
    return payload


def _model_from_config(config: dict, state: dict, path: Path) -> BladesModel:
    """The random-init model ``config`` describes; its statistics must be those saved with the weights."""
    try:
        model = BladesModel.from_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise SavedFileError(f"{path}: checkpoint config cannot build a model: {exc}") from None
    for name in NORMALIZATION_BUFFERS:
        saved = state.get(name)
        if saved is not None and (
            saved.numel() != 3 or not torch.allclose(saved.double().flatten(), getattr(model, name).double().flatten())
        ):
            raise SavedFileError(
                f"{path}: field config.{name}: {config.get(name)} differs from the weights' {name} "
                f"{saved.flatten().tolist()}"
            )
    return model


def is_exported_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder from :meth:`BladesModel.save_pretrained` / ``bfdkern export`` (and not a run)."""
    path = Path(path)
    return path.is_dir() and not (path / CHECKPOINT_NAME).exists() and (path / WEIGHTS_FILE).exists()


def model_from_checkpoint(payload: dict) -> BladesModel:
    """The model of a checkpoint dict from :func:`read_checkpoint` (on the CPU)."""
    path, config = Path(payload["path"]), payload["config"]
    model = _model_from_config(config, payload["state_dict"], path)
    load_fitting(model, payload["state_dict"], path, f"BladesModel(backbone={config['backbone']!r})")
    return model


def load_model(path_or_run_dir: str | os.PathLike, map_location="cpu") -> BladesModel:
    """Rebuild the model of an encoder file (:func:`save_model`), a run directory holding ``encoder.pt``, or an
    exported folder (``config.json`` + ``model.safetensors``)."""
    if is_exported_folder(path_or_run_dir):
        return BladesModel.from_pretrained(path_or_run_dir, map_location)
    model = model_from_checkpoint(read_checkpoint(path_or_run_dir, "cpu"))
    return model.to(map_location) if isinstance(map_location, (str, torch.device)) else model


def load_fitting(module: nn.Module, state: dict, path: str | os.PathLike, what: str) -> None:
    """``module.load_state_dict(state)`` (strict), with a :class:`SavedFileError` that names the file and lists
    what does not fit (missing, unexpected, mis-shaped entries)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch {_few(shapes)}")
        raise SavedFileError(f"{path}: checkpoint does not fit {what}: " + "; ".join(parts))
    module.load_state_dict(state)


def _few(items: list[str], n: int = 4) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more
