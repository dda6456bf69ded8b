"""Training samples for BLADES: real photos -> (image tensor, packed targets) with face manipulations made
on the fly, and two independent batch streams (B_tr for the virtual step, B_val for the outer loss l_1).

A sample is keyed by ``(index, stream, epoch)`` (or ``(index, stream, epoch, role)`` in paired batches:
role 0 the original, 1 a manipulated version); its randomness (manipulation kind and parameters, the
sub-pixel resampling) comes from ``numpy.random.default_rng([seed, *key])`` alone, so samples are identical
whatever the DataLoader workers, batch size or order. A plain ``int`` key is ``(index, 0, 0)``.

Per sample: decode -> optional face crop (the face box enlarged 1.3x, square) or the centred square ->
resize to ``size`` (:mod:`bfdkern.data.transforms`) -> originals half the time, each of the four
manipulations 1/8 (:mod:`bfdkern.data.manipulations`; every image is resampled the same way) -> targets:
the source photo's EXIF labels (kept for its manipulated versions too), ``manipulated`` 0/1 and the
``region`` columns (mouth, eye).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from bfdkern.data import manipulations
from bfdkern.data.decode import UnreadableImage, check_file, decode_image
from bfdkern.data.faces import FaceLocator, FaceParts, HaarFaceLocator, TemplateLocator
from bfdkern.data.transforms import IMAGE_SUFFIXES, array_to_tensor, center_box, fit_square, square_box
from bfdkern.tasks import TaskSpec

DETECT_SIDE = 640
"""Images are decoded at (at least) this side for face detection when they are indexed."""
MANIFEST_USABLE_REASONS = ("no_exif", "no_usable_tags")
"""Manifest rows without labels that are still real photos (they serve the manipulation tasks)."""


@dataclass
class Sample:
    """One drawn sample with what produced it."""

    image: Tensor  # float32 [3, size, size] in [0, 1]
    targets: Tensor  # float32 [J], NaN = missing
    kind: str  # one of manipulations.KINDS
    index: int
    path: str


@dataclass
class _Item:
    path: str
    parts: FaceParts | None  # in the pixels of ref_size; None: the locator runs on the cropped image
    ref_size: tuple[int, int]  # (width, height) of the decoded image the parts refer to


class FaceDataset(Dataset):
    """Real photos with EXIF labels -> ``(image [3, size, size], targets [J])``.

    Args:
        source: a manifest (SQLite file from ``bfdkern index``), a folder of images (scanned recursively;
            EXIF read with :mod:`bfdkern.exif`), or a list of image paths.
        spec: the task spec; EXIF tasks are filled from the labels, ``manipulated`` (binary) and ``region``
            (multilabel over ``mouth``/``eye``) from the manipulation, anything else stays missing.
        size: output side in pixels.
        seed: the dataset's randomness (see the module docstring).
        locator: where the face parts are. Default: :class:`HaarFaceLocator` with ``face_crop``, else
            :class:`TemplateLocator` (images are aligned face crops).
        face_crop: crop the face box enlarged by ``face_scale`` (square) instead of the centred square.
        manipulate: draw manipulations (False: every sample is its original, not resampled).
        probabilities: of :data:`manipulations.KINDS` (default: originals 1/2, each manipulation 1/8).
        bins: optional :class:`bfdkern.exif.QuantileBins` for the ordinal tasks.
        exif_backend: the EXIF reader for folders and path lists.
        progress: progress bar while indexing.

    Every image is decoded once when the dataset is built (and faces located when a detector is used);
    unreadable images and images without a face are skipped and counted in :attr:`skipped` (reason ->
    count; :attr:`skipped_files` lists them). :meth:`summary` says what was kept.
    """

    def __init__(
        self,
        source,
        spec: TaskSpec,
        size: int = 224,
        seed: int = 0,
        *,
        locator: FaceLocator | None = None,
        face_crop: bool = False,
        face_scale: float = 1.3,
        manipulate: bool = True,
        probabilities: Sequence[float] = manipulations.KIND_PROBABILITIES,
        bins=None,
        exif_backend: str = "pyexiv2",
        progress: bool = False,
    ):
        if int(size) < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        p = np.asarray(probabilities, dtype=np.float64)
        if p.shape != (len(manipulations.KINDS),) or (p < 0).any() or abs(p.sum() - 1) > 1e-6:
            raise ValueError(
                f"probabilities must be {len(manipulations.KINDS)} non-negative numbers summing to 1 "
                f"(for {list(manipulations.KINDS)}), got {list(probabilities)}"
            )
        self.spec, self.size, self.seed = spec, int(size), int(seed)
        self.face_crop, self.face_scale, self.manipulate = bool(face_crop), float(face_scale), bool(manipulate)
        self.probabilities = tuple(float(v) for v in p)
        self.locator = locator if locator is not None else (HaarFaceLocator() if face_crop else TemplateLocator())
        self.skipped: Counter = Counter()
        self.skipped_files: list[tuple[str, str]] = []
        self.exif_reasons: Counter = Counter()
        self._columns = _label_columns(spec)

        paths, labels = self._sources(source, exif_backend)
        from bfdkern.exif import targets as exif_targets

        exif = exif_targets(labels, spec, bins=bins, dtype=torch.float32) if labels else spec.empty_targets(0)
        self.items: list[_Item] = []
        keep = []
        for i, path in enumerate(_progress(paths, progress, "checking images")):
            item = self._index(path)
            if item is not None:
                self.items.append(item)
                keep.append(i)
        self.exif_targets = exif[keep] if keep else spec.empty_targets(0)
        self.source = str(source) if not isinstance(source, (list, tuple)) else f"{len(source)} paths"
        if not self.items:
            raise ValueError(f"{self.source}: no usable images ({self._skipped_text() or 'none found'})")

    # --- building the index -----------------------------------------------------------------------------
    def _sources(self, source, backend: str) -> tuple[list[str], list[dict]]:
        if isinstance(source, (list, tuple)):
            return self._read_exif([str(p) for p in source], backend)
        path = Path(source)
        if path.is_dir():
            files = sorted(
                str(p)
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
            )
            if not files:
                raise ValueError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            return self._read_exif(files, backend)
        if path.is_file():
            return self._read_manifest(path)
        raise FileNotFoundError(f"{path}: no such manifest or folder")

    def _read_exif(self, files: list[str], backend: str) -> tuple[list[str], list[dict]]:
        from bfdkern.exif import ExifReadError, get_backend, labels_of, read_exif

        reader = get_backend(backend)
        labels = []
        for f in files:
            try:
                check_file(f)  # the cap policy before the EXIF reader reads the file (decoding skips it)
            except UnreadableImage:
                labels.append({})
                continue
            try:
                lab, reasons = labels_of(read_exif(f, reader))
                for r in reasons.values():
                    if r is not None:
                        self.exif_reasons[r] += 1
            except ExifReadError as exc:  # the image may still decode: it keeps its manipulation labels
                lab = {}
                self.exif_reasons[exc.reason] += 1
            labels.append(lab)
        return files, labels

    def _read_manifest(self, path: Path) -> tuple[list[str], list[dict]]:
        from contextlib import closing

        from bfdkern.exif import TASKS
        from bfdkern.exif.manifest import manifest_root, open_manifest

        root = manifest_root(path)
        columns = ", ".join(f"{t}_label" for t in TASKS)
        with closing(open_manifest(path)) as db:
            rows = db.execute(f"SELECT path, reason, {columns} FROM files ORDER BY path").fetchall()
        files, labels = [], []
        for row in rows:
            if row["reason"] is not None and row["reason"] not in MANIFEST_USABLE_REASONS:
                self._skip(str(root / row["path"]), f"manifest: {row['reason']}")
                continue
            files.append(str(root / row["path"]))
            labels.append({t: row[f"{t}_label"] for t in TASKS})
        if not rows:
            raise ValueError(f"{path}: the manifest has no files")
        return files, labels

    def _index(self, path: str) -> _Item | None:
        detect = not isinstance(self.locator, TemplateLocator) or self.face_crop
        need = DETECT_SIDE if detect else self.size
        try:
            image = decode_image(path, draft=(need, need))
        except UnreadableImage as exc:
            self._skip(path, exc.reason)
            return None
        if not detect:
            return _Item(path, None, image.size)
        faces = self.locator.locate(np.asarray(image), source=path)
        if not faces:
            self._skip(path, "no face found")
            return None
        return _Item(path, faces[0], image.size)

    def _skip(self, path: str, reason: str) -> None:
        self.skipped[reason] += 1
        self.skipped_files.append((path, reason))

    # --- samples ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> tuple[Tensor, Tensor]:
        sample = self.draw(key)
        return sample.image, sample.targets

    def draw(self, key) -> Sample:
        """The sample for ``key``: ``index``, ``(index, stream, epoch)``, or ``(index, stream, epoch, role)``
        for paired batches, role 0 = the original, 1 = a manipulated version (its kind drawn from the
        manipulations' probabilities renormalised)."""
        key = (int(key), 0, 0) if np.isscalar(key) else tuple(int(k) for k in key)
        if len(key) not in (3, 4) or (len(key) == 4 and key[3] not in (0, 1)):
            raise KeyError(f"sample key must be index, (index, stream, epoch) or (..., role 0/1), got {key}")
        index, stream, epoch = key[:3]
        if not 0 <= index < len(self.items):
            raise IndexError(f"sample index {index} out of range for {len(self.items)} images")
        for _ in range(len(self.items)):
            item = self.items[index]
            try:
                array, parts = self._load(item)
                break
            except UnreadableImage as exc:  # changed on disk since indexing: serve the next image instead
                warnings.warn(f"{exc}; using the next image instead", stacklevel=2)
                self._skip(item.path, exc.reason)
                index = (index + 1) % len(self.items)
        else:
            raise RuntimeError(f"{self.source}: no image can be read any more ({self._skipped_text()})")
        rng = np.random.default_rng([self.seed, index, stream, epoch, *key[3:]])
        kind = "original"
        if self.manipulate:
            if len(key) == 3:
                kind = manipulations.choose_kind(rng, self.probabilities)
            elif key[3] == 1:
                kind = manipulations.choose_kind(rng, (0.0, *self.probabilities[1:]))
            array, _ = manipulations.manipulate(array, parts, rng, kind=kind)
        targets = self.exif_targets[index].clone()
        self._fill_manipulation(targets, kind)
        return Sample(array_to_tensor(array), targets, kind, index, item.path)

    def _load(self, item: _Item) -> tuple[np.ndarray, FaceParts]:
        """The ``size x size`` uint8 crop of an item and its face parts in that crop."""
        w0, h0 = item.ref_size
        if item.parts is not None and self.face_crop:
            box0 = square_box(item.parts.face, self.face_scale, w0, h0)
        else:
            box0 = center_box(w0, h0)
        side0 = box0[2] - box0[0]
        # Large JPEGs are decoded at a reduced DCT scale that still leaves twice the resolution needed, so the
        # final resize (the one filter of the preprocessing path) dominates. Square request: the draft size
        # refers to the stored orientation, which EXIF may rotate.
        need = max(1, round(2 * max(w0, h0) * self.size / side0))
        image = decode_image(item.path, draft=(need, need))
        sx, sy = image.width / w0, image.height / h0
        box = (round(box0[0] * sx), round(box0[1] * sy), round(box0[2] * sx), round(box0[3] * sy))
        array = fit_square(image, self.size, box)
        if item.parts is None:
            parts = self.locator.locate(array, source=item.path)[0]
        else:
            scale = self.size / (box0[2] - box0[0])
            parts = item.parts.transformed(scale, scale, box0[0], box0[1])
        return array, parts

    def _fill_manipulation(self, targets: Tensor, kind: str) -> None:
        manipulated, regions = self._columns
        if manipulated is not None:
            targets[manipulated] = float(kind != "original")
        for column, region in regions:
            targets[column] = float(region in manipulations.REGIONS[kind])

    # --- reporting --------------------------------------------------------------------------------------
    def _skipped_text(self) -> str:
        return ", ".join(f"{reason}: {n}" for reason, n in self.skipped.most_common())

    def summary(self) -> str:
        """One line: images kept, and skipped by reason."""
        text = f"{self.source}: {len(self.items)} images"
        if self.skipped:
            text += f", {sum(self.skipped.values())} skipped ({self._skipped_text()})"
        return text


def _label_columns(spec: TaskSpec) -> tuple[int | None, list[tuple[int, str]]]:
    """Target columns the manipulation fills: the binary task ``manipulated`` and the multilabel task
    whose classes are regions."""
    manipulated, regions = None, []
    for k, task in enumerate(spec.tasks):
        if task.kind == "binary" and task.name == "manipulated":
            manipulated = spec.target_offsets[k]
        elif task.kind == "multilabel" and task.name == "region":
            unknown = set(task.classes) - {"mouth", "eye"}
            if unknown or len(task.classes) != task.num_columns:
                raise ValueError(f"task 'region': classes must name regions among ('mouth', 'eye'), got {task.classes}")
            regions = [(spec.target_offsets[k] + j, name) for j, name in enumerate(task.classes)]
    return manipulated, regions


# ---------------------------------------------------------------------------------------------------------
# Batch streams
# ---------------------------------------------------------------------------------------------------------
class StreamSampler(Sampler):
    """Sample keys for one batch stream: each epoch a permutation of ``indices`` drawn from
    ``(seed, stream, epoch)``, as keys ``(index, stream, epoch)``; or, ``paired``, each index twice in a row,
    ``(index, stream, epoch, 0)`` (its original) then ``(index, stream, epoch, 1)`` (a manipulated version),
    so that an even batch holds each of its photos both ways. Every pass over the sampler is the next epoch;
    :meth:`set_epoch` rewinds or resumes (``start`` keys into the epoch are skipped)."""

    def __init__(self, indices: Sequence[int], seed: int, stream: int, paired: bool = False):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed, self.stream, self.paired = int(seed), int(stream), bool(paired)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next pass yields epoch ``epoch`` from its ``start``-th key on."""
        self.epoch, self.start = int(epoch), int(start)

    @property
    def keys_per_epoch(self) -> int:
        """Samples in a whole epoch: the images, twice when paired."""
        return len(self.indices) * (2 if self.paired else 1)

    def __len__(self) -> int:
        return self.keys_per_epoch - self.start

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        order = np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.indices)
        if self.paired:
            keys = ((int(i), self.stream, epoch, role) for i in order for role in (0, 1))
        else:
            keys = ((int(i), self.stream, epoch) for i in order)
        yield from islice(keys, start, None)


def make_loaders(
    dataset: FaceDataset,
    batch_size: int,
    *,
    seed: int | None = None,
    num_workers: int = 0,
    val_fraction: float = 0.0,
    paired: bool = True,
    pin_memory: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """Two independent batch streams over ``dataset``: (B_tr loader, B_val loader).

    Each is a DataLoader of ``(images [B, 3, size, size], targets [B, J])`` batches (last partial batch
    dropped); each pass over a loader is its next epoch (``loader.sampler`` is a :class:`StreamSampler`).
    The streams differ in order and in the manipulations drawn; with ``val_fraction > 0`` they also use
    disjoint images (that fraction for B_val). Use :func:`endless` to draw batches without epochs.

    ``paired`` (default): a batch holds B/2 photos, each as its original and as one manipulated version
    (originals are still half the samples and each manipulation 1/8). Seeing both versions of the same
    photo side by side, the manipulation tasks leave chance level within a few dozen steps on the simulated
    data instead of after a thousand or more; ``paired=False`` draws every sample independently.
    """
    seed = dataset.seed if seed is None else int(seed)
    if paired and batch_size % 2:
        raise ValueError(f"paired batches need an even batch size, got {batch_size}")
    if paired and not dataset.manipulate:
        raise ValueError("paired batches need a dataset that manipulates (manipulate=True)")
    per_batch = batch_size // 2 if paired else batch_size
    n = len(dataset)
    order = np.random.default_rng([seed, 2]).permutation(n)
    if val_fraction > 0:
        n_val = int(round(val_fraction * n))
        if not 0 < val_fraction < 1 or n_val < per_batch or n - n_val < per_batch:
            raise ValueError(
                f"val_fraction {val_fraction} of {n} images leaves fewer than one batch of {batch_size} "
                "for B_tr or B_val"
            )
        parts = (np.sort(order[n_val:]), np.sort(order[:n_val]))
    else:
        parts = (np.arange(n), np.arange(n))
    if min(len(p) for p in parts) < per_batch:
        raise ValueError(f"{dataset.source}: {n} images are fewer than one batch of {batch_size}")
    loaders = []
    for stream, indices in enumerate(parts):
        loaders.append(
            DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=StreamSampler(indices, seed, stream, paired),
                num_workers=num_workers,
                drop_last=True,
                pin_memory=pin_memory,
                persistent_workers=num_workers > 0,
            )
        )
    return loaders[0], loaders[1]


def endless(loader: DataLoader) -> Iterator:
    """Batches from ``loader`` epoch after epoch, forever."""
    for _ in count():
        yield from loader


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="img")


__all__ = ["FaceDataset", "Sample", "StreamSampler", "endless", "make_loaders"]
