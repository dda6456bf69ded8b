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

import hashlib
import multiprocessing
import os
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count, islice
from multiprocessing.context import get_spawning_popen
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from bfdkern.data import face_index, manipulations
from bfdkern.data.decode import UnreadableImage, check_file, decode_image
from bfdkern.data.face_index import read_manifest_items
from bfdkern.data.faces import (
    FACE_DETECTORS,
    FaceLocator,
    FaceParts,
    TemplateLocator,
    detector_id,
    normalized_parts,
    parts_in_pixels,
)
from bfdkern.data.faces import face_detector as face_detector_by_name
from bfdkern.data.transforms import IMAGE_SUFFIXES, Box, array_to_tensor, center_box, fit_square, square_box
from bfdkern.exif import ExifReadError, get_backend, labels_of, read_exif
from bfdkern.exif import targets as exif_targets
from bfdkern.exif.manifest import build_manifest
from bfdkern.tasks import TaskSpec

DETECT_SIDE = 640
"""Images are decoded at (at least) this side for face detection when they are indexed."""
DETECTORS = tuple(FACE_DETECTORS.values())
"""Locator classes whose faces the manifest stores (found once by the indexing workers)."""


class VanishedImages:
    """Counts images that could no longer be read when drawn (deleted or changed since the dataset was built),
    across DataLoader worker processes, and warns on the first one and then once every :attr:`every`, with the
    count so far and the last file, instead of once a sample (thousands of lines when a folder goes away)."""

    every = 100

    def __init__(self) -> None:
        self._count = multiprocessing.Value("q", 0)  # shared with forked and spawned DataLoader workers

    def __getstate__(self):
        # Shared only with processes being started (DataLoader workers); a plain copy keeps its count.
        return {"count": self._count if get_spawning_popen() is not None else None, "total": self.total}

    def __setstate__(self, state) -> None:
        self._count = state["count"] if state["count"] is not None else multiprocessing.Value("q", state["total"])

    @property
    def total(self) -> int:
        """Images that could not be read when drawn, in all processes."""
        return int(self._count.value)

    def record(self, exc: UnreadableImage) -> None:
        """Count one unreadable image (``exc`` names it); warn on the first and every :attr:`every`-th."""
        with self._count.get_lock():
            self._count.value += 1
            n = self._count.value
        if n == 1 or n % self.every == 0:
            warnings.warn(
                f"{n} image{'s' if n > 1 else ''} could not be read since the dataset was built (the next image is "
                f"served instead; warned again every {self.every}); last: {exc}",
                stacklevel=3,
            )


@dataclass
class Sample:
    """One drawn sample with what produced it."""

    image: Tensor  # float32 [3, size, size] in [0, 1]
    targets: Tensor  # float32 [J], NaN = missing
    kind: str  # one of manipulations.KINDS
    index: int
    path: str
    box: Box = (0, 0, 0, 0)  # the square cropped, in the pixels of the decoded image (image_size)
    parts: FaceParts | None = None  # face, eyes and mouth in the output crop's pixels (where manipulated)
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the decoded image the box refers to


@dataclass
class _Item:
    path: str
    parts: FaceParts | None  # in the pixels of ref_size; None: the locator runs on the cropped image
    ref_size: tuple[int, int]  # (width, height) of the image the parts refer to


def folder_manifest(folder: str | os.PathLike) -> Path:
    """Where the manifest of a photo folder is cached (EXIF labels and faces found once for every run on
    it): ``$BFDKERN_CACHE_DIR/manifests/<folder name>-<hash of its path>.sqlite``, the cache dir defaulting to
    ``~/.cache/bfdkern``."""
    folder = Path(folder).resolve()
    cache = Path(os.environ.get("BFDKERN_CACHE_DIR") or Path.home() / ".cache" / "bfdkern")
    digest = hashlib.sha1(str(folder).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return cache / "manifests" / f"{folder.name}-{digest}.sqlite"


class FaceDataset(Dataset):
    """Real photos with EXIF labels -> ``(image [3, size, size], targets [J])``.

    Args:
        source: a manifest (SQLite file from ``bfdkern index``), a folder of images (scanned recursively;
            EXIF read with :mod:`bfdkern.exif`), or a list of image paths.
        spec: the task spec; EXIF tasks are filled from the labels, ``manipulated`` (binary) and ``region``
            (multilabel over ``mouth``/``eye``) from the manipulation, anything else stays missing.
        size: output side in pixels.
        seed: the dataset's randomness (see the module docstring).
        locator: where the face parts are. Default: the ``face_detector`` with ``face_crop``, else
            :class:`TemplateLocator` (images are aligned face crops). Face boxes stored in a manifest (found
            when it was indexed, or imported from a table such as FDF's) take precedence.
        face_crop: crop the face box enlarged by ``face_scale`` (square, clipped to the image) instead of the
            centred square.
        face_detector: the detector (``auto``: MediaPipe when installed, else Haar; ``haar``; ``mediapipe``)
            that finds faces when they must be found (``face_crop`` on a folder, or on a manifest without boxes): found once, in
            ``index_workers`` processes, stored in the manifest (a folder's is cached, see
            :func:`folder_manifest`) and read back by every later dataset on the same photos.
        boxes: a face-box table (FDF's ``fdf_metainfo.json``, a CSV or JSON of boxes or landmarks; see
            :func:`bfdkern.data.face_index.import_boxes`) stored into the manifest first.
        manipulate: draw manipulations (False: every sample is its original, not resampled).
        probabilities: of :data:`manipulations.KINDS` (default: originals 1/2, each manipulation 1/8).
        bins: optional :class:`bfdkern.exif.QuantileBins` for the ordinal tasks.
        exif_backend: the EXIF reader for folders and path lists.
        progress: progress bars while indexing.

    A folder or a list of paths is checked when the dataset is built (every image decoded once); a manifest
    is trusted (200k rows open in seconds): an image that cannot be read when drawn is replaced by the next
    one and counted (:attr:`vanished`). Images without a face (with ``face_crop``) and unreadable ones are
    skipped and counted in :attr:`skipped` (reason -> count; :attr:`skipped_files` lists them).
    :attr:`detections` counts the faces detected while building (0 when the manifest knew them all).
    Under torch.distributed, rank 0 alone writes the manifest; the other ranks wait for it and read.
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
        face_detector: str = "auto",
        boxes: str | os.PathLike | None = None,
        index_workers: int = 2,
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
        if locator is None:
            locator = face_detector_by_name(face_detector) if face_crop else TemplateLocator()
        self.locator = locator
        self.skipped: Counter = Counter()
        self.skipped_files: list[tuple[str, str]] = []
        self.exif_reasons: Counter = Counter()
        self.vanished = VanishedImages()
        self.detections = 0
        self.face_reports: list = []
        self._columns = _label_columns(spec)
        self.source = str(source) if not isinstance(source, (list, tuple)) else f"{len(source)} paths"

        detects = isinstance(locator, DETECTORS)
        path = None if isinstance(source, (list, tuple)) else Path(source)
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{path}: no such manifest or folder")
        if path is not None and path.is_dir() and ((face_crop and detects) or boxes is not None):
            manifest = folder_manifest(path)
            self._prepare(manifest, path, exif_backend, boxes, face_crop and detects, index_workers, progress)
            self._from_manifest(manifest, bins)
        elif path is not None and path.is_file():
            self._prepare(path, None, exif_backend, boxes, face_crop and detects, index_workers, progress)
            self._from_manifest(path, bins)
        else:
            self._from_files(source, exif_backend, bins, progress)
        if not len(self.paths):
            raise ValueError(f"{self.source}: no usable images ({self._skipped_text() or 'none found'})")

    # --- building the index from a manifest ---------------------------------------------------------------
    def _prepare(self, manifest: Path, folder, backend, boxes, detect: bool, workers: int, progress: bool) -> None:
        """Bring ``manifest`` up to date (rank 0 alone under torch.distributed; the others wait): index the
        folder's EXIF, import the boxes table, find the faces it lacks."""
        rank, world = _distributed_rank()
        want = {"folder": None if folder is None else str(folder), "boxes": None if boxes is None else str(boxes)}
        want["detector"] = detector_id(self.locator) if detect else None
        want["token"] = _shared_token() if world > 1 else None  # this job's, not an earlier run's mark
        if rank != 0:
            face_index.wait_until_prepared(manifest, want)
            return
        if folder is not None:
            manifest.parent.mkdir(parents=True, exist_ok=True)
            build_manifest(folder, manifest, workers=workers, backend=backend, progress=progress)
        if boxes is not None:
            self.face_reports.append(face_index.import_boxes(manifest, boxes))
        if detect:
            report = face_index.find_faces(manifest, self.locator, workers=workers, progress=progress)
            self.detections += report.detections
            self.face_reports.append(report)
        face_index.mark_prepared(manifest, want)

    def _from_manifest(self, path: Path, bins) -> None:
        items = read_manifest_items(path, self.spec, bins)
        keep = np.ones(len(items.paths), dtype=bool)
        for i, reason in items.skip.items():
            keep[i] = False
            self._skip(items.paths[i], reason)
        if self.face_crop:
            for i in np.flatnonzero(keep & np.isnan(items.parts[:, 0])):
                keep[i] = False
                reason = items.face_reasons.get(int(i)) or "not looked for"
                self._skip(items.paths[i], "no face found" if reason == "no_face" else f"no face ({reason})")
        index = np.flatnonzero(keep)
        self.paths = [items.paths[i] for i in index]
        self.parts = items.parts[index]
        self.ref_sizes = items.sizes[index]
        self.exif_targets = items.targets[torch.from_numpy(index)] if len(index) else self.spec.empty_targets(0)
        self.vocabulary = items.vocabulary

    # --- building the index from files -----------------------------------------------------------------------
    def _from_files(self, source, backend: str, bins, progress: bool) -> None:
        paths, labels = self._sources(source, backend)
        exif = exif_targets(labels, self.spec, bins=bins, dtype=torch.float32) if labels else self.spec.empty_targets(0)
        self.paths, parts, sizes, keep = [], [], [], []
        for i, path in enumerate(_progress(paths, progress, "checking images")):
            item = self._index(path)
            if item is not None:
                self.paths.append(item.path)
                w, h = item.ref_size
                parts.append(normalized_parts(item.parts, w, h) if item.parts is not None else (np.nan,) * 12)
                sizes.append(item.ref_size)
                keep.append(i)
        self.parts = np.asarray(parts, dtype=np.float64).reshape(-1, 12)
        self.ref_sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self.exif_targets = exif[keep] if keep else self.spec.empty_targets(0)
        self.vocabulary = None

    def _sources(self, source, backend: str) -> tuple[list[str], list[dict]]:
        if isinstance(source, (list, tuple)):
            return self._read_exif([str(p) for p in source], backend)
        path = Path(source)
        files = sorted(
            str(p)
            for p in path.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise ValueError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return self._read_exif(files, backend)

    def _read_exif(self, files: list[str], backend: str) -> tuple[list[str], list[dict]]:
        reader = get_backend(backend)
        labels = []
        for f in files:
            try:
                check_file(f)  # the cap policy before the EXIF reader reads the file (decoding skips it)
            except UnreadableImage as exc:  # counted as the reader counts its refusals (not_a_regular_file, ...)
                self.exif_reasons[exc.reason.replace(" ", "_")] += 1
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
            except Exception as exc:  # a reader or parser bug must not stop the run; name the file
                warnings.warn(
                    f"{f}: EXIF not read ({type(exc).__name__}: {exc}); its EXIF labels are missing", stacklevel=2
                )
                lab = {}
                self.exif_reasons["parser_error"] += 1
            labels.append(lab)
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

    @property
    def items(self) -> list[_Item]:
        """Each image with its face parts in the pixels of the size they were found at (built on access)."""
        out = []
        for path, fractions, (w, h) in zip(self.paths, self.parts, self.ref_sizes.tolist()):
            known = not np.isnan(fractions[0]) and w > 0 and h > 0
            out.append(_Item(path, parts_in_pixels(fractions, w, h) if known else None, (w, h)))
        return out

    # --- samples ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

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
        if not 0 <= index < len(self.paths):
            raise IndexError(f"sample index {index} out of range for {len(self.paths)} images")
        for _ in range(len(self.paths)):
            try:
                array, parts, box, image_size = self._load(index)
                break
            except UnreadableImage as exc:  # changed on disk since indexing: serve the next image instead
                self.vanished.record(exc)
                self._skip(self.paths[index], exc.reason)
                index = (index + 1) % len(self.paths)
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
        return Sample(array_to_tensor(array), targets, kind, index, self.paths[index], box, parts, image_size)

    def _load(self, index: int) -> tuple[np.ndarray, FaceParts, Box, tuple[int, int]]:
        """The ``size x size`` uint8 crop of an image, its face parts in that crop, the square cropped (pixels of
        the decoded image) and the decoded image's (width, height)."""
        path, fractions = self.paths[index], self.parts[index]
        known = not np.isnan(fractions[0])
        # Large JPEGs are decoded at a reduced DCT scale that still leaves twice the resolution needed, so the
        # final resize (the one filter of the preprocessing path) dominates. Square request: the draft size
        # refers to the stored orientation, which EXIF may rotate.
        share = self.face_scale * max(fractions[2] - fractions[0], fractions[3] - fractions[1]) if known else 1.0
        need = max(1, round(2 * self.size / min(1.0, max(share, 1e-3))))
        image = decode_image(path, draft=(need, need))
        w, h = image.size
        parts = parts_in_pixels(fractions, w, h) if known else None
        box = (
            square_box(parts.face, self.face_scale, w, h)
            if (parts is not None and self.face_crop)
            else center_box(w, h)
        )
        array = fit_square(image, self.size, box)
        if parts is None:
            parts = self.locator.locate(array, source=path)[0]
        else:
            scale = self.size / (box[2] - box[0])
            parts = parts.transformed(scale, scale, box[0], box[1])
        return array, parts, box, (w, h)

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
        text = f"{self.source}: {len(self.paths)} images"
        if self.skipped:
            text += f", {sum(self.skipped.values())} skipped ({self._skipped_text()})"
        return text


def _shared_token() -> str:
    """A random token drawn by rank 0 and given to every rank (one small broadcast)."""
    box = [uuid.uuid4().hex]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) under an initialised torch.distributed, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
    return tqdm(it, desc=desc, unit="img")


__all__ = ["FaceDataset", "Sample", "StreamSampler", "endless", "make_loaders"]
