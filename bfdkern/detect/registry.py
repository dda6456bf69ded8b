"""The detectors ``bfdkern evaluate`` knows: what each is, how it is built, and whether it needs weights the
user supplies; and the frozen-feature slot, which loads any user encoder (a TorchScript file, or a torchvision
architecture with a state dict) for the same one-class (GMM) and binary (MLP) heads. Nothing is downloaded.

An encoder *source* is one string, recorded in detector files so that ``evaluate`` reloads the same encoder:

* ``RUN_DIR`` or ``FILE.pt``: a BLADES run or checkpoint (:func:`bfdkern.detect.load_encoder`), features
  L2-normalised;
* ``embedding:RUN_DIR`` or ``embedding:FILE.pt``: the same encoder's un-normalised embedding (Zou25's
  detector is fitted on it, with ``fit-oneclass --no-normalize``);
* ``torchscript:FILE``: a TorchScript module mapping normalised images [B, 3, H, W] to features [B, D];
* ``torchvision:ARCH:FILE``: ``torchvision.models.get_model(ARCH)`` with the state dict in FILE, its
  classification head removed (features = the penultimate layer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bfdkern.detect.encoder import FrozenEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_NAMES = ("fc", "classifier", "heads", "head")
"""Attributes that hold a torchvision model's classification head, in the order they are looked for."""


@dataclass(frozen=True)
class DetectorEntry:
    """A registered detector.

    Attributes:
        name: registry name.
        kind: ``oneclass`` (GMM on real features), ``binary`` (supervised) or ``training-free``.
        description: one line.
        build: the command(s) that build and evaluate it.
        user_weights: whether the user must supply weights (nothing is downloaded).
        implemented: False for baselines listed for completeness but not in this release.
    """

    name: str
    kind: str
    description: str
    build: str
    user_weights: bool = False
    implemented: bool = True


def _entries() -> dict[str, DetectorEntry]:
    from bfdkern.ablations import PRESETS

    entries = [
        DetectorEntry(
            "blades-oc",
            "oneclass",
            "BLADES encoder + Gaussian mixture on real faces' normalised features",
            "bfdkern pretrain; bfdkern fit-oneclass; bfdkern evaluate",
        ),
        DetectorEntry(
            "blades-bc",
            "binary",
            "BLADES encoder + 2-layer MLP on real and generated faces",
            "bfdkern pretrain; bfdkern fit-binary; bfdkern evaluate",
        ),
    ]
    entries += [
        DetectorEntry(p.name, "oneclass", p.description, f"bfdkern ablate --presets {p.name}")
        for p in PRESETS.values()
        if p.name != "blades"
    ]
    entries += [
        DetectorEntry(
            "frozen-oc",
            "oneclass",
            "any user encoder (e.g. CLIP, FaRL, EAL weights) + the same Gaussian mixture",
            "bfdkern fit-oneclass --encoder torchscript:FILE | torchvision:ARCH:FILE; bfdkern evaluate",
            user_weights=True,
        ),
        DetectorEntry(
            "frozen-bc",
            "binary",
            "any user encoder + the same 2-layer MLP",
            "bfdkern fit-binary --encoder torchscript:FILE | torchvision:ARCH:FILE; bfdkern evaluate",
            user_weights=True,
        ),
        DetectorEntry(
            "cnnd",
            "binary",
            "supervised ResNet-50 with blur + JPEG augmentation (p = 0.5 each)",
            "bfdkern fit-baseline cnnd -o FILE.pt; bfdkern evaluate --detector FILE.pt",
        ),
        DetectorEntry(
            "gramnet",
            "binary",
            "supervised ResNet-50 with Gram-matrix texture blocks",
            "bfdkern fit-baseline gramnet -o FILE.pt; bfdkern evaluate --detector FILE.pt",
        ),
        DetectorEntry(
            "hu21",
            "training-free",
            "corneal specular highlight consistency of the two eyes (IoU of the highlight masks)",
            "bfdkern evaluate --detector hu21",
        ),
    ]
    return {e.name: e for e in entries}


REGISTRY: dict[str, DetectorEntry] = _entries()


def format_registry(registry: dict[str, DetectorEntry] | None = None) -> str:
    """The registry as a text table: name, kind, implemented, user weights, description and how to build it."""
    entries = list((registry or REGISTRY).values())
    width = max(len(e.name) for e in entries)
    head = f"{'detector':<{width}}  {'kind':<13}  {'status':<15}  {'weights':<13}  description; how"
    lines = [head, "-" * len(head)]
    for e in entries:
        status = "implemented" if e.implemented else "not implemented"
        weights = "user-supplied" if e.user_weights else "none" if e.kind == "training-free" else "trained here"
        weights = weights if e.implemented else "-"
        lines.append(f"{e.name:<{width}}  {e.kind:<13}  {status:<15}  {weights:<13}  {e.description}; {e.build}")
    return "\n".join(lines)


# --- the frozen-feature slot ----------------------------------------------------------------------------
class UserEncoder(nn.Module):
    """A user network as a frozen feature extractor: images [B, 3, H, W] in [0, 1] are normalised with
    ``mean``/``std``, passed through ``net``, flattened and L2-normalised -> [B, D]."""

    def __init__(self, net: nn.Module, source: str, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.net = net
        self.source = source
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.config = {"encoder_source": source}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> L2-normalised features [B, D]."""
        y = self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
        if not isinstance(y, torch.Tensor) or y.dim() < 2 or y.shape[0] != x.shape[0]:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{self.source}: the encoder gave {shape} for {x.shape[0]} images, expected [B, D]")
        return F.normalize(y.flatten(1).float(), dim=1)


def _state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or damaged file
        raise ValueError(f"{path}: not a readable state dict ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def torchvision_encoder(arch: str, path: str | os.PathLike) -> nn.Module:
    """``torchvision.models.get_model(arch)`` (no weights downloaded) with the state dict in ``path`` and its
    classification head replaced by the identity. Raises ValueError naming the file when the weights do not
    fit the architecture."""
    import torchvision

    path = Path(path)
    if arch not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision architecture {arch!r} (see torchvision.models.list_models())")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    net = torchvision.models.get_model(arch, weights=None)
    head = next((name for name in HEAD_NAMES if isinstance(getattr(net, name, None), nn.Module)), None)
    # The head is dropped, so its weights (of any class count) are neither loaded nor required.
    in_head = (lambda key: key.startswith(head + ".")) if head else (lambda key: False)
    state = {k: v for k, v in _state_dict(path).items() if not in_head(k)}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{path}: does not fit torchvision {arch}: {exc}") from None
    missing = [k for k in result.missing_keys if not in_head(k)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not fit torchvision {arch}: {len(missing)} missing ({missing[:3]}), "
            f"{len(unexpected)} unexpected ({unexpected[:3]}) parameters"
        )
    if head is not None:
        setattr(net, head, nn.Identity())
    return net


def load_frozen_encoder(source: str | os.PathLike) -> FrozenEncoder:
    """The encoder an encoder *source* string names (see the module docstring), frozen, on the CPU."""
    from bfdkern.detect.encoder import load_encoder

    text = str(source)
    if text.startswith("torchscript:"):
        path = Path(text.removeprefix("torchscript:"))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such TorchScript file")
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ValueError(f"{path}: not a TorchScript file ({type(exc).__name__})") from None
        return FrozenEncoder.from_module(UserEncoder(net, text), source=text)
    if text.startswith("torchvision:"):
        arch, sep, path = text.removeprefix("torchvision:").partition(":")
        if not sep or not arch or not path:
            raise ValueError(f"encoder {text!r}: expected torchvision:ARCH:FILE, e.g. torchvision:resnet50:w.pth")
        return FrozenEncoder.from_module(UserEncoder(torchvision_encoder(arch, path), text), source=text)
    if text.startswith("embedding:"):
        return load_encoder(text.removeprefix("embedding:"), embedding=True)
    return load_encoder(source)


def source_of(text: str) -> str:
    """A source string with its file made absolute (so a detector file finds it from any folder)."""
    if text.startswith("torchscript:"):
        return "torchscript:" + str(Path(text.removeprefix("torchscript:")).resolve())
    if text.startswith("torchvision:"):
        arch, _, path = text.removeprefix("torchvision:").partition(":")
        return f"torchvision:{arch}:{Path(path).resolve()}"
    if text.startswith("embedding:"):
        return "embedding:" + str(Path(text.removeprefix("embedding:")).resolve())
    return str(Path(text).resolve())


def fit_frozen(
    source: str,
    real_paths,
    output: str | os.PathLike,
    *,
    kind: str = "oneclass",
    fake_paths=None,
    size: int = 224,
    jpeg_quality: int | None = 95,
    detector_options: dict | None = None,
    feature_options: dict | None = None,
):
    """Fit the one-class (``kind="oneclass"``: on ``real_paths``) or binary (``"binary"``: ``real_paths`` vs
    ``fake_paths``) detector on a frozen encoder's features and save it to ``output`` (.npz), recording the
    source so that ``bfdkern evaluate --detector OUTPUT`` reloads the encoder. Returns the detector."""
    from bfdkern.detect import BinaryDetector, OneClassDetector, Preprocessing, save_detector

    source = source_of(source)
    encoder = load_frozen_encoder(source)
    prep = Preprocessing(jpeg_quality=jpeg_quality, size=int(size))
    kw = dict(feature_options or {})
    real = encoder.features(list(real_paths), prep, **kw)
    if kind == "oneclass":
        detector = OneClassDetector(**(detector_options or {})).fit(real)
    elif kind == "binary":
        if not fake_paths:
            raise ValueError("the binary detector needs fake images (fake_paths)")
        fake = encoder.features(list(fake_paths), prep, **kw)
        detector = BinaryDetector(**(detector_options or {})).fit(real, fake, device=kw.get("device"))
    else:
        raise ValueError(f"kind must be 'oneclass' or 'binary', got {kind!r}")
    save_detector(output, detector, encoder=encoder.identity, preprocessing=prep)
    return detector


def load_detector_with_any_encoder(detector_path: str | os.PathLike, encoder: str | None = None):
    """(detector, header, FrozenEncoder): the detector file and its encoder (``encoder``: any source string,
    default the one recorded in the file), checked to be the very encoder the detector was fitted on.

    Raises :class:`~bfdkern.detect.serialization.DetectorFileError` naming the detector file when the encoder
    differs."""
    from bfdkern.detect.serialization import check_encoder, load_detector

    det, header = load_detector(detector_path)
    source = encoder or det.encoder.get("source")
    if not source:
        raise ValueError(f"{detector_path}: no encoder recorded; pass --encoder")
    frozen = load_frozen_encoder(source)
    check_encoder(detector_path, det, frozen.fingerprint, source)
    return det, header, frozen


# --- any registered detector as a scorer of image files ------------------------------------------------------
TRAINING_FREE = ("hu21",)


def load_scorer(item: str, encoder: str | None = None, feature_options: dict | None = None):
    """A detector to evaluate, from ``NAME=WHAT`` or ``WHAT``: a detector file from fit-oneclass / fit-binary /
    :func:`fit_frozen` (``.npz``), a CNND or GramNet file (``.pt``), or ``hu21`` (training-free).

    Returns (name, detector, score) where ``score(paths) -> [N]`` scores image files; ``name`` defaults to the
    file's stem. ``encoder`` overrides the encoder recorded in ``.npz`` files."""
    name, sep, what = item.partition("=")
    if not sep:
        name, what = "", item
    kw = dict(feature_options or {})
    if what in TRAINING_FREE:
        from bfdkern.detect.baselines import CornealHighlightDetector

        det = CornealHighlightDetector()
        return name or what, det, lambda paths: det.score_files(paths, progress=kw.get("progress", True))
    path = Path(what)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such detector file (or training-free detector {list(TRAINING_FREE)})")
    if path.suffix == ".pt":
        from bfdkern.detect.baselines import CNNDetector, GramNetDetector

        try:
            kind = torch.load(path, map_location="cpu", weights_only=True).get("kind")
        except Exception as exc:
            raise ValueError(f"{path}: not a readable CNND or GramNet detector file ({type(exc).__name__})") from None
        classes = {c.kind: c for c in (CNNDetector, GramNetDetector)}
        if kind not in classes:
            raise ValueError(f"{path}: not a CNND or GramNet detector file")
        det = classes[kind].load(path)
        device = kw.get("device")
        return name or path.stem, det, lambda paths: det.score_files(paths, device=device)
    det, _, frozen = load_detector_with_any_encoder(path, encoder)
    return name or path.stem, det, lambda paths: det.score(frozen.features(paths, det.preprocessing, **kw))
