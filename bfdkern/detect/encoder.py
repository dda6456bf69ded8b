"""The frozen encoder as the detectors see it: a feature extractor with an identity.

:class:`FrozenEncoder` pairs a module that has ``features(x) -> [B, D]`` with its identity (checkpoint
fingerprint, where it was loaded from, its architecture), which detector files record so that a
detector is never applied to another encoder's features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bfdkern.detect.features import encoder_fingerprint, extract_features
from bfdkern.detect.preprocess import Preprocessing


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


def load_encoder(run_or_checkpoint: str | os.PathLike) -> FrozenEncoder:
    """Load a pretrained encoder from a run directory (``RUN/encoder.pt``) or a checkpoint file.

    Raises FileNotFoundError / ValueError naming the path when it holds no usable checkpoint."""
    from bfdkern.models import CHECKPOINT_NAME, load_model, read_checkpoint

    path = Path(run_or_checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such encoder run directory or checkpoint")
    model = load_model(path, map_location="cpu")
    source = path / CHECKPOINT_NAME if path.is_dir() else path
    frozen = FrozenEncoder.from_module(model, source=str(source.resolve()))
    # How the encoder saw images in pretraining: the detectors' preprocessing defaults follow it.
    extra = read_checkpoint(source).get("extra") or {}
    pretrain = extra.get("pretrain_config") if isinstance(extra.get("pretrain_config"), dict) else {}
    for key in ("image_size", "face_crop"):
        if key in pretrain:
            frozen.identity["config"][key] = pretrain[key]
    return frozen


def load_detector_with_encoder(detector_path: str | os.PathLike, encoder: str | os.PathLike | None = None):
    """(detector, header, FrozenEncoder): the detector file and its encoder (``encoder``, default the checkpoint
    recorded in the file), checked to be the very encoder the detector was fitted on.

    Raises :class:`~bfdkern.detect.serialization.DetectorFileError` naming the detector file when the encoder
    differs."""
    from bfdkern.detect.serialization import check_encoder, load_detector

    det, header = load_detector(detector_path)
    source = encoder or det.encoder.get("source")
    if not source:
        raise ValueError(f"{detector_path}: no encoder checkpoint recorded; pass --encoder")
    frozen = load_encoder(source)
    check_encoder(detector_path, det, frozen.fingerprint, source)
    return det, header, frozen
