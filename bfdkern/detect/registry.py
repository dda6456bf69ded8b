"""The detectors ``bfdkern evaluate`` knows: what each is, how it is built, and whether it needs weights the
user supplies (nothing is downloaded); and :func:`load_scorer`, which turns any of them into a :class:`Scorer` of
image files that skips unreadable ones. User encoders (the frozen-feature slot) are loaded by :mod:`bfdkern.detect.encoder`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bfdkern.data.decode import UnreadableImage, decode_image, read_image_file
from bfdkern.data.transforms import fit_square
from bfdkern.detect.baselines import CNNDetector, CornealHighlightDetector, GramNetDetector
from bfdkern.detect.encoder import load_detector_with_any_encoder
from bfdkern.detect.features import Skipped, image_features, resolve_device
from bfdkern.detect.preprocess import pipeline_warning
from bfdkern.models.files import torch_load


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


def catalogue(variants: Iterable[DetectorEntry] = ()) -> dict[str, DetectorEntry]:
    """name -> entry for every detector: BLADES one-class and binary, then ``variants`` (the ablation presets,
    which the recipes define and the evaluate command passes in), then the frozen-feature slot and the
    baselines."""
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
        *variants,
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
            "blades-authors-oc",
            "oneclass",
            "the authors' released BLADES encoder (OC.pth) + the same Gaussian mixture",
            "bfdkern import-weights OC.pth --format blades -o enc.pt; bfdkern fit-oneclass --encoder enc.pt; "
            "bfdkern evaluate (docs/weights.md)",
            user_weights=True,
        ),
        DetectorEntry(
            "blades-authors-bc",
            "binary",
            "the authors' released BLADES binary detector (BC.pth: encoder + MLP), nothing fitted",
            "bfdkern import-weights BC.pth --format blades -o enc.pt --detector bc.npz; bfdkern evaluate "
            "--detector bc.npz",
            user_weights=True,
        ),
        DetectorEntry(
            "zou25-authors",
            "oneclass",
            "the authors' released Zou25 encoder + a 12-component mixture on its un-normalised embedding",
            "bfdkern import-weights FILE --format zou25 -o z.pt; bfdkern fit-oneclass --encoder embedding:z.pt "
            "--no-normalize --components 12; bfdkern evaluate",
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


def format_catalogue(catalogue: dict[str, DetectorEntry]) -> str:
    """The catalogue as a text table: name, kind, implemented, user weights, description and how to build it."""
    entries = list(catalogue.values())
    width = max(len(e.name) for e in entries)
    head = f"{'detector':<{width}}  {'kind':<13}  {'status':<15}  {'weights':<13}  description; how"
    lines = [head, "-" * len(head)]
    for e in entries:
        status = "implemented" if e.implemented else "not implemented"
        weights = "user-supplied" if e.user_weights else "none" if e.kind == "training-free" else "trained here"
        weights = weights if e.implemented else "-"
        lines.append(f"{e.name:<{width}}  {e.kind:<13}  {status:<15}  {weights:<13}  {e.description}; {e.build}")
    return "\n".join(lines)


# --- any registered detector as a scorer of image files ------------------------------------------------------
TRAINING_FREE = ("hu21",)


@dataclass
class ScoredFiles:
    """A scorer's output for a list of files: the scores of those it could read, in input order, and the
    files it skipped with their reasons."""

    paths: list[Path]  # the M files scored
    scores: np.ndarray  # float64 [M]
    skipped: list[Skipped] = field(default_factory=list)
    no_face: list[Path] = field(default_factory=list)


@dataclass
class Scorer:
    """A named detector that scores image files: ``score_files(paths, perturbation=None) -> ScoredFiles``.

    ``detector`` gives the conventions (``kind``, ``positive_class``, ``score_name``, ``threshold``,
    ``decide``); ``extra`` what the results record about it (detector file, encoder identity, preprocessing)."""

    name: str
    detector: object
    score_files: Callable[..., ScoredFiles]
    extra: dict = field(default_factory=dict)


def frozen_scorer(name: str, detector, encoder, feature_options: dict | None = None, extra=None) -> Scorer:
    """A one-class or binary head on a frozen encoder (:class:`~bfdkern.detect.encoder.FrozenEncoder`): the
    detector's preprocessing, then the perturbation, then the encoder, then the head (on the features' device)."""
    kw = dict(feature_options or {})

    def score_files(paths, perturbation=None) -> ScoredFiles:
        got = image_features(
            encoder.module,
            paths,
            kw.get("batch_size", 32),
            kw.get("device"),
            kw.get("cache_dir"),
            preprocessing=detector.preprocessing,
            perturbation=perturbation,
            num_workers=kw.get("num_workers", 2),
            progress=kw.get("progress", True),
            encoder_id=encoder.fingerprint,
        )
        scores = detector.score(got.features) if got.paths else np.zeros(0)
        return ScoredFiles(got.paths, scores, got.skipped, got.no_face)

    if hasattr(detector, "to"):  # the one-class mixture scores on the features' device, in float64
        detector.to(resolve_device(kw.get("device")))
    return Scorer(name, detector, score_files, dict(extra or {}))


def _decoded(paths, perturbation, size: int | None, progress: bool, desc: str):
    """(index, uint8 [H, W, 3]) for each readable file, or (index, Skipped): decoded by the one decode path,
    centre-square resized to ``size`` (None: kept whole), then perturbed."""
    for i, path in enumerate(tqdm(list(paths), desc=desc, unit="img", disable=not progress, leave=False)):
        try:
            data = read_image_file(path)
            array = np.asarray(decode_image(data, name=path), dtype=np.uint8)
        except UnreadableImage as exc:
            yield i, Skipped.of(path, exc)
            continue
        if size is not None:
            array = fit_square(array, size)
        if perturbation is not None:
            array = perturbation.apply(array, hashlib.sha256(data).hexdigest())
        yield i, array


def image_scorer(name: str, detector, score_arrays, size: int | None, progress: bool, batch: int, extra=None):
    """A detector that scores decoded pixels (``score_arrays(list of uint8 [H, W, 3]) -> [n]``); its common
    preprocessing is the decode path and, when ``size`` is given, its own centre-square resize."""

    def score_files(paths, perturbation=None) -> ScoredFiles:
        paths = [Path(p) for p in paths]
        kept, scores, skipped, pending = [], [], [], []

        def flush():
            if pending:
                scores.append(np.asarray(score_arrays([a for _, a in pending]), dtype=np.float64))
                kept.extend(paths[i] for i, _ in pending)
                pending.clear()

        for i, got in _decoded(paths, perturbation, size, progress, name):
            if isinstance(got, Skipped):
                skipped.append(got)
            else:
                pending.append((i, got))
                if len(pending) >= batch:
                    flush()
        flush()
        return ScoredFiles(kept, np.concatenate(scores) if scores else np.zeros(0), skipped)

    return Scorer(name, detector, score_files, dict(extra or {}))


def load_scorer(item: str, encoder: str | None = None, feature_options: dict | None = None) -> Scorer:
    """A detector to evaluate, from ``NAME=WHAT`` or ``WHAT``: a detector file from fit-oneclass / fit-binary /
    :func:`~bfdkern.detect.fitting.fit_frozen` (``.npz``), a CNND or GramNet file (``.pt``), or ``hu21``
    (training-free). ``NAME`` defaults to the file's stem; ``encoder`` overrides the encoder recorded in ``.npz``
    files. Unreadable images are skipped with their reasons (:class:`ScoredFiles`)."""
    name, sep, what = item.partition("=")
    if not sep:
        name, what = "", item
    kw = dict(feature_options or {})
    progress = kw.get("progress", True)
    if what in TRAINING_FREE:
        det = CornealHighlightDetector()
        score = lambda arrays: [det.score_image(a) for a in arrays]
        return image_scorer(name or what, det, score, None, progress, 1, {"detector_file": what})
    path = Path(what)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such detector file (or training-free detector {list(TRAINING_FREE)})")
    if path.suffix == ".pt":
        data = torch_load(path, "cpu", "CNND or GramNet detector")
        kind = data.get("kind") if isinstance(data, dict) and isinstance(data.get("kind"), str) else None
        classes = {c.kind: c for c in (CNNDetector, GramNetDetector)}
        if kind not in classes:
            raise ValueError(f"{path}: not a CNND or GramNet detector file")
        det = classes[kind].load(path)
        device = kw.get("device")
        score = lambda arrays: det.score_images(arrays, device)
        batch = kw.get("batch_size", 32)
        return image_scorer(name or path.stem, det, score, det.params["size"], progress, batch, {"detector_file": what})
    det, header, frozen = load_detector_with_any_encoder(path, encoder)
    extra = {"detector_file": str(path), "encoder": frozen.identity, "preprocessing": det.preprocessing.to_dict()}
    note = pipeline_warning(header, path)
    extra["warnings"] = [note] if note else []
    return frozen_scorer(name or path.stem, det, frozen, kw, extra)
