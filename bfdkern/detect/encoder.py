"""The frozen encoder as the detectors see it: a feature extractor with an identity, and every way to load one.

:class:`FrozenEncoder` pairs a module that has ``features(x) -> [B, D]`` with its identity (content hash of
its weights, where it was loaded from, its architecture and input statistics), which detector files record so
that a detector is never applied to another encoder's features.

An encoder *source* is one string (:mod:`bfdkern.detect.sources`), recorded in detector files so that
``detect`` and ``evaluate`` reload the same encoder (:func:`load_frozen_encoder`):

* ``RUN_DIR``, ``FILE.pt`` or ``EXPORT_DIR``: a BLADES run, encoder file (also one made by
  ``bfdkern import-weights``) or exported folder (:func:`load_encoder`), features L2-normalised;
* ``embedding:RUN_DIR`` or ``embedding:FILE.pt``: the same encoder's un-normalised embedding (Zou25's
  detector is fitted on it, with ``fit-oneclass --no-normalize``);
* ``torchscript:FILE``: a TorchScript module mapping normalised images [B, 3, H, W] to features [B, D];
* ``torchvision:ARCH:FILE``: ``torchvision.models.get_model(ARCH)`` with the state dict in FILE, its
  classification head removed (features = the penultimate layer). Nothing is downloaded.

The last two are torchvision-style networks: their images are normalised with ImageNet's statistics (recorded
in their identity); a BLADES encoder carries its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bfdkern.detect.features import encoder_fingerprint, extract_features
from bfdkern.detect.preprocess import Preprocessing
from bfdkern.detect.serialization import DetectorFileError, check_encoder, load_detector
from bfdkern.detect.sources import absolute_source, candidate_sources, source_exists, split_source
from bfdkern.models import load_model, read_checkpoint
from bfdkern.models.encoder import is_exported_folder, model_from_checkpoint
from bfdkern.models.files import torch_load
from bfdkern.models.normalization import IMAGENET_MEAN, IMAGENET_STD
from bfdkern.models.pretrained import CONFIG_FILE

HEAD_NAMES = ("fc", "classifier", "heads", "head")
"""Attributes that hold a torchvision model's classification head, in the order they are looked for."""


@dataclass
class FrozenEncoder:
    """A feature extractor (``module.features``) and its identity dict (``fingerprint``, ``source``,
    ``config``)."""

    module: nn.Module
    identity: dict

    @classmethod
    def from_module(cls, module: nn.Module, source: str = "<in memory>") -> FrozenEncoder:
        """Wrap a module (anything with ``features``); its fingerprint is computed from its weights."""
        if not callable(getattr(module, "features", None)):
            raise TypeError(f"{type(module).__name__} has no features(x) method")
        config = getattr(module, "config", None)
        config = {k: v for k, v in config.items() if k != "spec"} if isinstance(config, dict) else {}
        return cls(module, {"fingerprint": encoder_fingerprint(module), "source": str(source), "config": config})

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the encoder's weights (see :func:`bfdkern.detect.features.encoder_fingerprint`)."""
        return self.identity["fingerprint"]

    def matches(self, fingerprint: str) -> bool:
        """Whether ``fingerprint`` (recorded in a detector file) is this encoder's. Detector files written before
        the input statistics were saved with the weights hold the fingerprint without them; those encoders
        could only have ImageNet's, so that fingerprint matches an encoder with ImageNet statistics."""
        if fingerprint == self.fingerprint:
            return True
        stats = [(n, b) for n, b in self.module.state_dict().items() if n.rsplit(".", 1)[-1] in ("mean", "std")]
        buffers = {n: b for n, b in stats if tuple(b.shape) == (1, 3, 1, 1)}
        imagenet = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        if not buffers or not all(
            torch.allclose(b.double().flatten(), torch.tensor(imagenet[n.rsplit(".", 1)[-1]], dtype=torch.float64))
            for n, b in buffers.items()
        ):
            return False
        return fingerprint == encoder_fingerprint(self.module, skip=tuple(buffers))

    def features(
        self,
        paths: Sequence[str | os.PathLike],
        preprocessing: Preprocessing,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        num_workers: int = 2,
        progress: bool = True,
    ) -> np.ndarray:
        """Features [N, D] of image files (see :func:`bfdkern.detect.features.extract_features`)."""
        return extract_features(
            self.module,
            paths,
            batch_size,
            device,
            cache_dir,
            preprocessing=preprocessing,
            num_workers=num_workers,
            progress=progress,
            encoder_id=self.fingerprint,
        )


class EmbeddingFeatures(nn.Module):
    """A pretrained :class:`~bfdkern.models.BladesModel` whose ``features`` is its un-normalised embedding
    [B, D] (for detectors fitted on unnormalised features, as Zou25's). Its fingerprint differs from the
    model's, so the feature cache and the detector files never mix the two."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = dict(getattr(model, "config", {}), features="embedding")

    def features(self, x):
        """[B, 3, H, W] RGB in [0, 1] -> [B, D] embedding, not normalised."""
        return self.model.embedding(x)


def load_encoder(run_or_checkpoint: str | os.PathLike, *, embedding: bool = False) -> FrozenEncoder:
    """Load a pretrained encoder from a run directory (``RUN/encoder.pt``), an encoder file or an exported folder;
    with ``embedding`` its features are the un-normalised embedding (:class:`EmbeddingFeatures`).

    Raises FileNotFoundError / ValueError naming the path when it holds no usable encoder."""
    path = Path(run_or_checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such encoder run directory, checkpoint or exported folder")
    if is_exported_folder(path):
        model, source = load_model(path), path
        extra = json.loads((path / CONFIG_FILE).read_text())
    else:
        payload = read_checkpoint(path)
        model, source = model_from_checkpoint(payload), Path(payload["path"])
        extra = payload.get("extra") or {}
    if embedding:
        frozen = FrozenEncoder.from_module(EmbeddingFeatures(model), source=f"embedding:{source.resolve()}")
    else:
        frozen = FrozenEncoder.from_module(model, source=str(source.resolve()))
    # How the encoder saw images in pretraining: the detectors' preprocessing defaults follow it.
    pretrain = extra.get("pretrain_config") if isinstance(extra.get("pretrain_config"), dict) else {}
    config = frozen.identity["config"]
    if model.input_size is not None:
        config["image_size"] = model.input_size
    for key in ("image_size", "face_crop"):
        if key in pretrain:
            config[key] = pretrain[key]
    return frozen


# --- the frozen-feature slot: user encoders ------------------------------------------------------------
class UserEncoder(nn.Module):
    """A user network as a frozen feature extractor: images [B, 3, H, W] in [0, 1] are normalised with
    ``mean``/``std`` (ImageNet's: torchvision-style networks expect them; recorded in :attr:`config`), passed
    through ``net``, flattened and L2-normalised -> [B, D]."""

    def __init__(self, net: nn.Module, source: str, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.net = net
        self.source = source
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.config = {"encoder_source": source, "mean": list(mean), "std": list(std)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> L2-normalised features [B, D]."""
        y = self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
        if not isinstance(y, torch.Tensor) or y.dim() < 2 or y.shape[0] != x.shape[0]:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{self.source}: the encoder gave {shape} for {x.shape[0]} images, expected [B, D]")
        return F.normalize(y.flatten(1).float(), dim=1)


def _state_dict(path: Path) -> dict:
    state = torch_load(path, "cpu", "state dict")  # one line naming the file when torch cannot read it
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
    import torchvision  # lazy: heavy (torchvision, ~1.4 s), only when a torchvision encoder is built

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
    return absolute_source(text)


def find_detector_encoder(detector_path: str | os.PathLike, recorded: dict) -> FrozenEncoder:
    """The encoder a detector file records (``recorded``: its header's ``encoder``), found by content hash: tried
    at its path relative to the detector file, at its recorded absolute path, then beside the detector file. The
    first that exists and is the very encoder (same fingerprint) wins.

    Raises FileNotFoundError when none exists, :class:`DetectorFileError` when those that exist are other
    encoders (a different encoder under the same name)."""
    expected = recorded["fingerprint"]
    candidates = candidate_sources(recorded, detector_path)
    present = [c for c in candidates if source_exists(c)]
    if not present:
        tried = ", ".join(split_source(c)[1] for c in candidates) or "no path recorded"
        raise FileNotFoundError(
            f"{detector_path}: its encoder was not found (looked for {tried}); pass --encoder with the encoder it "
            "was fitted on"
        )
    seen = []
    for source in present:
        frozen = load_frozen_encoder(source)
        if frozen.matches(expected):
            return frozen
        seen.append(f"{split_source(source)[1]} is {frozen.fingerprint[:12]}")
    raise DetectorFileError(
        f"{detector_path}: fitted on features of encoder {expected[:12]}, but {'; '.join(seen)} (a different "
        "encoder under the same name); use the detector's own encoder or refit the detector"
    )


def load_detector_with_any_encoder(detector_path: str | os.PathLike, encoder: str | None = None):
    """(detector, header, FrozenEncoder): the detector file and its encoder (``encoder``: any source string,
    default the one recorded in the file, found by :func:`find_detector_encoder`), checked to be the very encoder
    the detector was fitted on.

    Raises :class:`~bfdkern.detect.serialization.DetectorFileError` naming the detector file when the encoder
    differs."""
    det, header = load_detector(detector_path)
    if encoder is None:
        return det, header, find_detector_encoder(detector_path, det.encoder)
    frozen = load_frozen_encoder(encoder)
    if not frozen.matches(det.encoder["fingerprint"]):
        check_encoder(detector_path, det, frozen.fingerprint, encoder)
    return det, header, frozen
