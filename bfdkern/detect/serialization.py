"""Detector files: one ``.npz`` holding the arrays plus a JSON header, loaded without pickle and validated.

The header (entry ``__meta__``, a JSON string) records the format version, the detector kind and
settings, its fit report, the evaluation preprocessing, the encoder's identity (content hash of its weights,
where it came from, absolute and relative to the detector file, its architecture) and a checksum of the whole
content. Loading uses ``np.load(allow_pickle=False)``: a detector file can hold numbers and text only, never
code; every field's type, every array's shape and finiteness and the checksum are checked, and a file that
fails gets one line naming it and the field. Files written before checksums and relative paths still load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from bfdkern.atomic import atomic_write
from bfdkern.detect.binary import BinaryDetector
from bfdkern.detect.oneclass import COVARIANCE_TYPES, OneClassDetector
from bfdkern.detect.preprocess import Preprocessing
from bfdkern.detect.sources import relative_source
from bfdkern.models.files import CHECKSUM_KEY, Fields, SavedFileError, check_finite, payload_checksum

FORMAT = "bfdkern.detector/1"
FIT_HASHES_KEY = "__fit_sha256__"
META_KEY = "__meta__"
KINDS = {"oneclass": OneClassDetector, "binary": BinaryDetector}
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")

Detector = OneClassDetector | BinaryDetector


class DetectorFileError(SavedFileError):
    """A detector file that cannot be used; the message names the file (and the field)."""


def content_checksum(header: dict, arrays: dict[str, np.ndarray]) -> str:
    """The checksum a detector file's header stores: of the header (its checksum left out) and every array."""
    header = {k: v for k, v in header.items() if k != CHECKSUM_KEY}
    return payload_checksum({"header": header, "arrays": arrays})


def save_detector(
    path: str | os.PathLike,
    detector: Detector,
    *,
    encoder: dict,
    preprocessing: Preprocessing,
    fit_hashes=None,
) -> Path:
    """Write ``detector`` to ``path`` (``.npz`` appended when missing), atomically, with a checksum of its content.

    Args:
        encoder: the encoder's identity, at least ``{"fingerprint": <sha256 hex>}``; usually also
            ``source`` (where the encoder was loaded from; its path relative to the detector file is recorded
            too, so that the two can be moved together) and ``config``.
        preprocessing: the image preprocessing the features were made with (reused at detection).
        fit_hashes: optional sha256 hex digests of the image files the detector was fitted on (evaluate refuses
            test images among them).
    """
    if "fingerprint" not in encoder:
        raise ValueError("encoder identity needs a 'fingerprint'")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = dict(encoder)
    if isinstance(encoder.get("source"), str):
        rel = relative_source(encoder["source"], path.parent)
        if rel is not None:
            encoder["relative_source"] = rel
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
    header = json.loads(json.dumps(header, sort_keys=True))  # as it will be read back (tuples become lists)
    header[CHECKSUM_KEY] = content_checksum(header, payload)
    payload[META_KEY] = np.array(json.dumps(header, sort_keys=True))
    return atomic_write(path, lambda f: np.savez(f, **payload))


def load_detector(path: str | os.PathLike) -> tuple[Detector, dict]:
    """Read a file written by :func:`save_detector`, validated.

    Returns (detector, header); the detector also carries ``.encoder`` (dict), ``.preprocessing``
    (:class:`Preprocessing`) and ``.fit_hashes`` (frozenset of sha256 hex; empty when the file has none). Raises :class:`DetectorFileError` naming the file (and the field) when it is
    missing, not a detector file, damaged or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DetectorFileError(f"{path}: no such detector file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # a damaged .npz: numpy raises zip, header-syntax and even tokenize errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DetectorFileError(
            f"{path}: not a detector file (.npz without pickled objects) or damaged: {first}"
        ) from None
    if META_KEY not in arrays:
        raise DetectorFileError(f"{path}: not a bfdkern detector file (no {META_KEY} header)")
    meta = arrays.pop(META_KEY)
    if meta.ndim != 0 or meta.dtype.kind != "U":
        raise DetectorFileError(f"{path}: field {META_KEY}: expected one JSON string, got an array {meta.shape}")
    try:
        header = json.loads(str(meta))
    except (ValueError, TypeError) as exc:
        raise DetectorFileError(f"{path}: detector header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise DetectorFileError(f"{path}: detector format {found!r}, expected {FORMAT!r}")
    fields = Fields(path, header, DetectorFileError)
    if CHECKSUM_KEY in header:
        stored = fields.string(CHECKSUM_KEY)
        if content_checksum(header, arrays) != stored:
            raise DetectorFileError(
                f"{path}: checksum mismatch: the file is damaged or was changed after it was written; use an "
                "intact copy or refit the detector"
            )
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise DetectorFileError(f"{path}: unknown detector kind {kind!r}, expected one of {list(KINDS)}")
    _check_header(fields)
    fit_hashes = arrays.pop(FIT_HASHES_KEY, None)  # after the checksum, which covers it
    if fit_hashes is not None and (fit_hashes.dtype != np.uint8 or fit_hashes.ndim != 2 or fit_hashes.shape[1] != 32):
        raise DetectorFileError(
            f"{path}: {FIT_HASHES_KEY} must be uint8 [N, 32], got {fit_hashes.dtype} {fit_hashes.shape}"
        )
    _ARRAY_CHECKS[kind](fields, arrays)
    try:
        detector = KINDS[kind].from_state(header, arrays)
        preprocessing = Preprocessing.from_dict(header["preprocessing"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DetectorFileError(f"{path}: malformed {kind} detector: {exc!r}") from None
    detector.encoder = header["encoder"]
    detector.preprocessing = preprocessing
    detector.fit_hashes = (
        frozenset(row.tobytes().hex() for row in fit_hashes) if fit_hashes is not None else frozenset()
    )
    return detector, header


def _check_header(fields: Fields) -> None:
    fields.string("positive_class", optional=True)
    fields.string("score_name", optional=True)
    fields.dict("encoder")
    fingerprint = fields.string("encoder.fingerprint")
    if not FINGERPRINT.match(fingerprint):
        fields.fail("encoder.fingerprint", f"expected 64 lowercase hex digits, got {fingerprint[:70]!r}")
    fields.string("encoder.source", optional=True)
    fields.string("encoder.relative_source", optional=True)
    fields.dict("encoder.config", optional=True)
    fields.dict("preprocessing")
    quality = fields.integer("preprocessing.jpeg_quality", minimum=1, optional=True)
    if quality is not None and quality > 100:
        fields.fail("preprocessing.jpeg_quality", f"{quality} is above 100")
    if not isinstance(fields.get("preprocessing.face_crop", False), bool):
        fields.fail("preprocessing.face_crop", f"expected true or false, got {fields.get('preprocessing.face_crop')!r}")
    fields.number("preprocessing.face_scale", optional=True, check=lambda v: v >= 1, what=">= 1")
    fields.integer("preprocessing.size", minimum=8, optional=True)
    fields.integer("preprocessing.pipeline", minimum=1, optional=True)
    fields.dict("params")
    fields.number("threshold")
    fields.dict("report", optional=True)


def _array(fields: Fields, arrays: dict, name: str, ndim: int) -> np.ndarray:
    if name not in arrays:
        fields.fail(f"arrays.{name}", "missing")
    a = arrays[name]
    if a.dtype.kind != "f" or a.ndim != ndim:
        fields.fail(f"arrays.{name}", f"expected a {ndim}-d floating array, got {a.dtype} {a.shape}")
    check_finite(fields, f"arrays.{name}", a)
    return a


def _no_other_arrays(fields: Fields, arrays: dict, names) -> None:
    extra = sorted(set(arrays) - set(names))
    if extra:
        fields.fail("arrays", f"unexpected arrays {extra}")


def _check_oneclass(fields: Fields, arrays: dict) -> None:
    cov = fields.string("params.covariance_type", COVARIANCE_TYPES)
    k = fields.integer("params.n_components", minimum=1)
    if not isinstance(fields.get("params.normalize", True), bool):
        fields.fail("params.normalize", "expected true or false")
    names = ("weights", "means", "precisions_cholesky")
    _no_other_arrays(fields, arrays, names)
    weights = _array(fields, arrays, "weights", 1)
    means = _array(fields, arrays, "means", 2)
    d = means.shape[1]
    if weights.shape != (k,) or means.shape[0] != k or d < 1:
        fields.fail("arrays", f"weights {weights.shape} and means {means.shape} do not fit {k} components")
    if (weights < 0).any() or abs(float(weights.sum()) - 1.0) > 1e-6:
        fields.fail("arrays.weights", f"mixing weights must be >= 0 and sum to 1 (sum {float(weights.sum())})")
    expected = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[cov]
    prec = _array(fields, arrays, "precisions_cholesky", len(expected))
    if prec.shape != expected:
        fields.fail("arrays.precisions_cholesky", f"expected shape {expected} ({cov} covariance), got {prec.shape}")


def _check_binary(fields: Fields, arrays: dict) -> None:
    names = [f"mlp.{layer}" for layer in ("0.weight", "0.bias", "2.weight", "2.bias")]
    _no_other_arrays(fields, arrays, names)
    w1, b1, w2, b2 = (_array(fields, arrays, n, nd) for n, nd in zip(names, (2, 1, 2, 1)))
    h = w1.shape[0]
    if b1.shape != (h,) or w2.shape != (2, h) or b2.shape != (2,):
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, (w1, b1, w2, b2)))
        fields.fail("arrays", f"the MLP layers do not fit together ({shapes})")
    hidden = fields.integer("params.hidden", minimum=1)
    if hidden != h:
        fields.fail("params.hidden", f"{hidden}, but the first layer has {h} units")
    if fields.number("threshold") != BinaryDetector.threshold:
        fields.fail("threshold", f"the binary detector decides at P(fake) > {BinaryDetector.threshold}")


_ARRAY_CHECKS = {"oneclass": _check_oneclass, "binary": _check_binary}


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
