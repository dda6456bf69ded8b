"""Fitting a detector head on a frozen encoder's features, from Python: what ``bfdkern fit-oneclass`` and
``bfdkern fit-binary`` do for any encoder source."""

from __future__ import annotations

import os

from bfdkern.detect.binary import BinaryDetector
from bfdkern.detect.encoder import load_frozen_encoder, source_of
from bfdkern.detect.features import image_features, skipped_record
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
    source so that ``bfdkern evaluate --detector OUTPUT`` reloads the encoder, and the fit images' content
    hashes so that it refuses test images from the fit set. Unreadable images are skipped (the report lists
    them). Returns the detector."""
    if kind not in ("oneclass", "binary"):
        raise ValueError(f"kind must be 'oneclass' or 'binary', got {kind!r}")
    if kind == "binary" and not fake_paths:
        raise ValueError("the binary detector needs fake images (fake_paths)")
    source = source_of(source)
    encoder = load_frozen_encoder(source)
    prep = Preprocessing(jpeg_quality=jpeg_quality, size=int(size))
    kw = {**(feature_options or {}), "preprocessing": prep, "encoder_id": encoder.fingerprint}
    sets = [image_features(encoder.module, list(real_paths), **kw)]
    if kind == "binary":
        sets.append(image_features(encoder.module, list(fake_paths), **kw))
    for got in sets:
        if not got.paths:
            raise ValueError(f"none of the {len(got.skipped)} images could be read, e.g. {got.skipped[0].message}")
    if kind == "oneclass":
        detector = OneClassDetector(**(detector_options or {})).fit(sets[0].features)
    else:
        detector = BinaryDetector(**(detector_options or {})).fit(
            sets[0].features, sets[1].features, device=kw.get("device")
        )
    detector.report["skipped"] = skipped_record([s for got in sets for s in got.skipped])
    hashes = [h for got in sets for h in got.digests]
    save_detector(output, detector, encoder=encoder.identity, preprocessing=prep, fit_hashes=hashes)
    return detector
