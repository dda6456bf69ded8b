"""Detector files: one ``.npz`` holding the arrays plus a JSON header, loaded without pickle.

The header (entry ``__meta__``, a JSON string) records the format version, the detector kind and
settings, its fit report, the evaluation preprocessing and the encoder's identity (checkpoint
fingerprint, where it came from, its architecture). Loading uses ``np.load(allow_pickle=False)``:
a detector file can hold numbers and text only, never code.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from bfdkern.detect.binary import BinaryDetector
from bfdkern.detect.oneclass import OneClassDetector
from bfdkern.detect.preprocess import Preprocessing

FORMAT = "bfdkern.detector/1"
META_KEY = "__meta__"
FIT_HASHES_KEY = "__fit_sha256__"
"""Optional array uint8 [N, 32]: the sha256 of every image file the detector was fitted (and calibrated) on,
so that evaluation can refuse test images that are in the fit set."""
KINDS = {"oneclass": OneClassDetector, "binary": BinaryDetector}

Detector = OneClassDetector | BinaryDetector


class DetectorFileError(ValueError):
    """A detector file that cannot be used; the message names the file."""


def save_detector(
    path: str | os.PathLike,
    detector: Detector,
    *,
    encoder: dict,
    preprocessing: Preprocessing,
    fit_hashes=None,
) -> Path:
    """Write ``detector`` to ``path`` (``.npz`` appended when missing), atomically.

    Args:
        encoder: the encoder's identity, at least ``{"fingerprint": <sha256 hex>}``; usually also
            ``source`` (the checkpoint path) and ``config``.
        preprocessing: the image preprocessing the features were made with (reused at detection).
        fit_hashes: optional sha256 hex digests of the image files the detector was fitted on.
    """
    if "fingerprint" not in encoder:
        raise ValueError("encoder identity needs a 'fingerprint'")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta, arrays = detector.state()
    header = {
        "format": FORMAT,
        "kind": detector.kind,
        "positive_class": detector.positive_class,
        "score_name": detector.score_name,
        "encoder": encoder,
        "preprocessing": preprocessing.to_dict(),
        **meta,
    }
    payload = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if fit_hashes is not None:
        digests = sorted(set(fit_hashes))
        payload[FIT_HASHES_KEY] = np.frombuffer(b"".join(bytes.fromhex(h) for h in digests), np.uint8).reshape(-1, 32)
    payload[META_KEY] = np.array(json.dumps(header, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_detector(path: str | os.PathLike) -> tuple[Detector, dict]:
    """Read a file written by :func:`save_detector`.

    Returns (detector, header); the detector also carries ``.encoder`` (dict), ``.preprocessing``
    (:class:`Preprocessing`) and ``.fit_hashes`` (frozenset of sha256 hex; empty when the file has none). Raises :class:`DetectorFileError` naming the file when it is missing,
    not a detector file, or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DetectorFileError(f"{path}: no such detector file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DetectorFileError(f"{path}: not a detector file (.npz without pickled objects): {exc}") from None
    if META_KEY not in arrays:
        raise DetectorFileError(f"{path}: not a bfdkern detector file (no {META_KEY} header)")
    fit_hashes = arrays.pop(FIT_HASHES_KEY, None)
    if fit_hashes is not None and (fit_hashes.dtype != np.uint8 or fit_hashes.ndim != 2 or fit_hashes.shape[1] != 32):
        raise DetectorFileError(
            f"{path}: {FIT_HASHES_KEY} must be uint8 [N, 32], got {fit_hashes.dtype} {fit_hashes.shape}"
        )
    try:
        header = json.loads(str(arrays.pop(META_KEY)))
    except (ValueError, TypeError) as exc:
        raise DetectorFileError(f"{path}: detector header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise DetectorFileError(f"{path}: detector format {found!r}, expected {FORMAT!r}")
    cls = KINDS.get(header.get("kind"))
    if cls is None:
        raise DetectorFileError(f"{path}: unknown detector kind {header.get('kind')!r}, expected one of {list(KINDS)}")
    if not isinstance(header.get("encoder"), dict) or "fingerprint" not in header["encoder"]:
        raise DetectorFileError(f"{path}: detector header does not record its encoder's fingerprint")
    try:
        detector = cls.from_state(header, arrays)
        preprocessing = Preprocessing.from_dict(header.get("preprocessing", {}))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DetectorFileError(f"{path}: malformed {header['kind']} detector: {exc!r}") from None
    detector.encoder = header["encoder"]
    detector.preprocessing = preprocessing
    detector.fit_hashes = (
        frozenset(row.tobytes().hex() for row in fit_hashes) if fit_hashes is not None else frozenset()
    )
    return detector, header


def check_encoder(
    detector_path: str | os.PathLike, header_or_detector, fingerprint: str, encoder_source: str | os.PathLike
) -> None:
    """Raise :class:`DetectorFileError` when the detector was fitted with another encoder than the one
    whose fingerprint is ``fingerprint`` (loaded from ``encoder_source``)."""
    enc = header_or_detector["encoder"] if isinstance(header_or_detector, dict) else header_or_detector.encoder
    expected = enc["fingerprint"]
    if expected != fingerprint:
        src = enc.get("source", "an unrecorded checkpoint")
        raise DetectorFileError(
            f"{detector_path}: fitted on features of encoder {expected[:12]} (from {src}), but the encoder "
            f"{encoder_source} is {fingerprint[:12]}; use the detector's own encoder or refit the detector"
        )
