"""The detectors ``bfdkern evaluate`` knows: what each is, how it is built, and whether it needs weights the
user supplies (nothing is downloaded); and :func:`load_scorer`, which turns any of them into a scorer of image
files. User encoders (the frozen-feature slot) are loaded by :mod:`bfdkern.detect.encoder`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bfdkern.detect.baselines import CNNDetector, CornealHighlightDetector, GramNetDetector
from bfdkern.detect.encoder import load_detector_with_any_encoder


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


def load_scorer(item: str, encoder: str | None = None, feature_options: dict | None = None):
    """A detector to evaluate, from ``NAME=WHAT`` or ``WHAT``: a detector file from fit-oneclass / fit-binary /
    :func:`~bfdkern.detect.fitting.fit_frozen` (``.npz``), a CNND or GramNet file (``.pt``), or ``hu21`` (training-free).

    Returns (name, detector, score) where ``score(paths) -> [N]`` scores image files; ``name`` defaults to the
    file's stem. ``encoder`` overrides the encoder recorded in ``.npz`` files."""
    name, sep, what = item.partition("=")
    if not sep:
        name, what = "", item
    kw = dict(feature_options or {})
    if what in TRAINING_FREE:
        det = CornealHighlightDetector()
        return name or what, det, lambda paths: det.score_files(paths, progress=kw.get("progress", True))
    path = Path(what)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such detector file (or training-free detector {list(TRAINING_FREE)})")
    if path.suffix == ".pt":
        from bfdkern.models.files import torch_load

        data = torch_load(path, "cpu", "CNND or GramNet detector")
        kind = data.get("kind") if isinstance(data, dict) and isinstance(data.get("kind"), str) else None
        classes = {c.kind: c for c in (CNNDetector, GramNetDetector)}
        if kind not in classes:
            raise ValueError(f"{path}: not a CNND or GramNet detector file")
        det = classes[kind].load(path)
        device = kw.get("device")
        return name or path.stem, det, lambda paths: det.score_files(paths, device=device)
    det, _, frozen = load_detector_with_any_encoder(path, encoder)
    return name or path.stem, det, lambda paths: det.score(frozen.features(paths, det.preprocessing, **kw))
