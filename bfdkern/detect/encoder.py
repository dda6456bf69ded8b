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
    """Load a pretrained encoder from a run directory (``RUN/encoder.pt``) or a checkpoint file; with
    ``embedding`` its features are the un-normalised embedding (:class:`EmbeddingFeatures`).

    Raises FileNotFoundError / ValueError naming the path when it holds no usable checkpoint."""
    from bfdkern.models import CHECKPOINT_NAME, load_model, read_checkpoint

    path = Path(run_or_checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such encoder run directory or checkpoint")
    model = load_model(path, map_location="cpu")
    source = path / CHECKPOINT_NAME if path.is_dir() else path
    if embedding:
        frozen = FrozenEncoder.from_module(EmbeddingFeatures(model), source=f"embedding:{source.resolve()}")
    else:
        frozen = FrozenEncoder.from_module(model, source=str(source.resolve()))
    # How the encoder saw images in pretraining: the detectors' preprocessing defaults follow it.
    extra = read_checkpoint(source).get("extra") or {}
    pretrain = extra.get("pretrain_config") if isinstance(extra.get("pretrain_config"), dict) else {}
    for key in ("image_size", "face_crop"):
        if key in pretrain:
            frozen.identity["config"][key] = pretrain[key]
    return frozen
