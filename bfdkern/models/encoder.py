"""The BLADES encoder: a backbone with an embedding layer and packed linear heads for the task spec.

Input images are ``[B, 3, H, W]`` float RGB in ``[0, 1]`` (what :func:`bfdkern.data.transforms.to_tensor`
gives); the model applies the ImageNet mean/std normalisation itself, so every caller feeds the same thing.

* ``forward(x)`` -> logits ``[B, spec.num_columns]``: one ``nn.Linear`` over the embedding, its columns laid
  out as the spec packs them.
* ``features(x)`` -> ``[B, feature_dim]``: the embedding, L2-normalised (what the detectors fit).

Nothing downloads weights: the backbone starts from random init, or from a torchvision state-dict file the
user supplies (``backbone_weights``), or a whole model is restored with :func:`load_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfdkern.atomic import atomic_torch_save, describe_load_error
from bfdkern.models.choices import BACKBONES
from bfdkern.tasks import TaskSpec

CHECKPOINT_FORMAT = "bfdkern.model/1"
CHECKPOINT_NAME = "encoder.pt"
"""The file a run directory keeps its encoder in."""

# ImageNet statistics: the torchvision ResNets' pretrained weights expect them.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


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
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


class BladesModel(nn.Module):
    """Encoder + packed linear heads for ``spec``.

    Args:
        spec: the task spec; the heads have ``spec.num_columns`` outputs in its packing order.
        backbone: ``"resnet50"`` (the paper's), ``"resnet18"``, or ``"small"`` (a tiny CNN for the CPU demo).
        feature_dim: size of the embedding (the ResNet's fc maps to it; 768 in the paper).
        backbone_weights: optional path of a torchvision ResNet state dict (for example ImageNet weights
            downloaded by the user) to initialise the backbone from; its ``fc`` is ignored.
    """

    def __init__(
        self,
        spec: TaskSpec,
        backbone: str = "resnet50",
        feature_dim: int = 768,
        backbone_weights: str | os.PathLike | None = None,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}, expected one of {list(BACKBONES)}")
        if int(feature_dim) < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        self.spec = spec
        self.backbone_name = backbone
        self.feature_dim = int(feature_dim)
        self.backbone = SmallBackbone() if backbone == "small" else _torchvision_resnet(backbone)
        self.embed = nn.Linear(self.backbone.out_dim, self.feature_dim)
        self.heads = nn.Linear(self.feature_dim, spec.num_columns)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        if backbone_weights is not None:
            load_backbone_weights(self, backbone_weights)

    @property
    def config(self) -> dict:
        """What rebuilds this architecture: backbone, feature_dim and the spec (JSON-able)."""
        return {"backbone": self.backbone_name, "feature_dim": self.feature_dim, "spec": self.spec.to_dict()}

    def embedding(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> [B, feature_dim] (not normalised)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(x.shape)}")
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.embed(self.backbone(x))

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> logits [B, spec.num_columns]."""
        return self.heads(self.embedding(x))

    def features(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> L2-normalised features [B, feature_dim] (for the detectors)."""
        return F.normalize(self.embedding(x), dim=1)


def load_backbone_weights(model: BladesModel, path: str | os.PathLike) -> None:
    """Initialise ``model.backbone`` from a torchvision-style state dict file (``fc.*`` entries are
    ignored; the embedding layer stays random). Raises ValueError naming the file when it does not fit."""
    path = Path(path)
    state = _torch_load(path, "cpu")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: not a state dict of tensors (expected a torchvision {model.backbone_name} state dict)"
        )
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    _load_fitting(model.backbone, state, path, f"the {model.backbone_name} backbone")


def save_model(path: str | os.PathLike, model: BladesModel, extra: dict | None = None) -> Path:
    """Write ``model`` (config, spec, weights) and ``extra`` (tensors, numbers, strings, lists, dicts only:
    it must load with ``weights_only=True``) to ``path`` atomically. Returns the path."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, path)


def read_checkpoint(path_or_run_dir: str | os.PathLike, map_location="cpu") -> dict:
    """The raw checkpoint dict (``format``, ``config``, ``state_dict``, ``extra``) of a file written by
    :func:`save_model`, or of ``RUN_DIR/encoder.pt``. Loads with ``weights_only=True``."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    payload = _torch_load(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a bfdkern model checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise ValueError(f"{path}: checkpoint has no {key!r} dict")
    payload["path"] = str(path)
    return payload


def load_model(path_or_run_dir: str | os.PathLike, map_location="cpu") -> BladesModel:
    """Rebuild the model saved by :func:`save_model` (a file, or a run directory holding ``encoder.pt``)."""
    payload = read_checkpoint(path_or_run_dir, map_location)
    path, config = Path(payload["path"]), payload["config"]
    try:
        spec = TaskSpec.from_dict(config["spec"])
        model = BladesModel(spec, backbone=config["backbone"], feature_dim=int(config["feature_dim"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint config cannot build a model: {exc}") from None
    _load_fitting(model, payload["state_dict"], path, f"BladesModel(backbone={config['backbone']!r})")
    return model.to(map_location) if isinstance(map_location, (str, torch.device)) else model


def _torch_load(path: Path, map_location):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, unsupported globals
        raise ValueError(
            f"{path}: cannot be read as a weights-only torch checkpoint: {describe_load_error(exc)}"
        ) from None


def _load_fitting(module: nn.Module, state: dict, path: Path, what: str) -> None:
    """load_state_dict with an error that names the file and lists what does not fit."""
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
        raise ValueError(f"{path}: checkpoint does not fit {what}: " + "; ".join(parts))
    module.load_state_dict(state)


def _few(items: list[str], n: int = 4) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more
