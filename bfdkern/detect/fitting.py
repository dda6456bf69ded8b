"""Fitting a detector head on a frozen encoder's features, from Python: what ``bfdkern fit-oneclass`` and
``bfdkern fit-binary`` do for any encoder source."""

from __future__ import annotations

import os

from bfdkern.detect.binary import BinaryDetector
from bfdkern.detect.encoder import load_frozen_encoder, source_of
from bfdkern.detect.oneclass import OneClassDetector
from bfdkern.detect.preprocess import Preprocessing
from bfdkern.detect.serialization import save_detector


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
