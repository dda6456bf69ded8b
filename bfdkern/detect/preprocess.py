"""Evaluation preprocessing: the same steps for every image, real or fake, whatever its folder or format.

1. **Decode** with the project's one decode path (:func:`bfdkern.data.decode.decode_image`, as pretraining
   does): the cap policy, EXIF orientation applied, RGB, every bit of metadata dropped.
2. **Crop** the square the encoder sees: the largest face (OpenCV Haar cascade), its box enlarged
   ``face_scale`` times and made square, as pretraining crops faces; or, without ``face_crop`` (or when no face
   is found), the centred square.
3. **Resize** that square to ``size x size`` with the project's one filter
   (:func:`bfdkern.data.transforms.fit_square`: bicubic).
4. **Re-encode** (optional, ``jpeg_quality``): a baseline JPEG at one quality, decoded again, so that every
   image reaching the encoder carries the same compression, whether it came as a camera JPEG or a generator's
   PNG.
5. **Perturb** (evaluation's robustness sweep only): :class:`bfdkern.detect.perturb.Perturbation`.
6. **Tensor**: float ``[3, size, size]`` in [0, 1] (:func:`bfdkern.data.transforms.array_to_tensor`).

:class:`Preprocessing` is a small frozen value; its :meth:`~Preprocessing.to_dict` goes into a detector file
and into the feature cache key (with :data:`PIPELINE`, the version of these steps), so features are never mixed
across settings or versions.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bfdkern.data.decode import DEFAULT_LIMITS, Limits, UnreadableImage, decode_image, read_image_file, reencode_jpeg
from bfdkern.data.faces import HaarFaceLocator
from bfdkern.data.transforms import IMAGE_SUFFIXES, fit_square, square_box

PIPELINE = 2
"""Version of the preprocessing steps. 1: no EXIF orientation, the re-encode before the resize (until 0.1)."""

ImageError = UnreadableImage
"""An image file that cannot be used (the decode path's error; ``reason`` says why, the message names it)."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by suffix, :data:`bfdkern.data.transforms.IMAGE_SUFFIXES`) under ``folder``, recursively, sorted.

    Raises FileNotFoundError when the folder does not exist and ValueError when it holds no image."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ValueError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
    return paths


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the pixels the encoder sees (the module docstring's steps).

    Args:
        jpeg_quality: re-encode every image as JPEG at this quality (1..100) after resizing; None keeps the
            resized pixels as they are (metadata is still dropped).
        face_crop: crop to the largest detected face (OpenCV Haar cascade); an image with no detected
            face is centre-cropped (:meth:`apply` says so; feature extraction warns with the count).
        face_scale: the face box is enlarged by this factor (and made square) before cropping.
        size: side in pixels of the encoder's input (224 for the ResNets, 64 for the small CPU backbone).
    """

    jpeg_quality: int | None = 95
    face_crop: bool = False
    face_scale: float = 1.3
    size: int = 224

    def __post_init__(self) -> None:
        if self.jpeg_quality is not None and not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100 or None, got {self.jpeg_quality}")
        if not self.face_scale >= 1.0:
            raise ValueError(f"face_scale must be >= 1, got {self.face_scale}")
        if int(self.size) < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")

    def to_dict(self) -> dict:
        """JSON-able settings plus the :data:`PIPELINE` version (stored in detector files and cache keys)."""
        return {**asdict(self), "pipeline": PIPELINE}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """Inverse of :meth:`to_dict` (the pipeline version is not a setting: see :func:`pipeline_of`)."""
        known = {k: data[k] for k in ("jpeg_quality", "face_crop", "face_scale", "size") if k in data}
        return cls(**known)

    def apply(
        self, data: bytes, name: str | os.PathLike = "<bytes>", perturbation=None, key: bytes | str = b""
    ) -> tuple[np.ndarray, bool | None]:
        """The encoded bytes of one image file -> (uint8 ``[size, size, 3]``, face_found).

        Args:
            data: the file's bytes (:func:`read_image_file`).
            name: the file, named in errors.
            perturbation: an optional :class:`~bfdkern.detect.perturb.Perturbation` (step 5).
            key: the file's content hash (seeds a random perturbation).

        ``face_found`` is None when ``face_crop`` is off. Raises :class:`ImageError` for data that is not a
        decodable image (``reason`` says why)."""
        image = decode_image(data, name=name)
        box, face_found = None, None
        if self.face_crop:
            box = largest_face_box(image, self.face_scale)
            face_found = box is not None
        array = fit_square(image, int(self.size), box)
        if self.jpeg_quality is not None:
            array = np.asarray(reencode_jpeg(array, int(self.jpeg_quality)), dtype=np.uint8)
        if perturbation is not None:
            array = perturbation.apply(array, key)
        return array, face_found

    def load(self, path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
        """Read and preprocess one image file (see :meth:`apply`); returns uint8 ``[size, size, 3]``."""
        return self.apply(read_image_file(path, limits), path)[0]


def pipeline_of(preprocessing: dict) -> int:
    """The :data:`PIPELINE` version a stored preprocessing dict was made with (1 when it predates versions)."""
    return int(preprocessing.get("pipeline", 1))


def pipeline_warning(header: dict, path) -> str | None:
    """A one-line warning when the detector file ``path`` (its ``header``) was fitted on features of an older
    preprocessing pipeline than the one that makes the features now; None when they agree."""
    version = pipeline_of(header.get("preprocessing") or {})
    if version == PIPELINE:
        return None
    return (
        f"{path} was fitted on features of preprocessing pipeline {version}, features are now made by pipeline "
        f"{PIPELINE} (EXIF orientation applied, the JPEG re-encode after the resize): refit it for exact results"
    )


_LOCATORS = threading.local()


def _face_locator():
    # One cascade per thread: feature extraction preprocesses images in a thread pool.
    if getattr(_LOCATORS, "haar", None) is None:
        _LOCATORS.haar = HaarFaceLocator()
    return _LOCATORS.haar


def largest_face_box(image: Image.Image, scale: float = 1.3) -> tuple[int, int, int, int] | None:
    """The square box (x0, y0, x1, y1) around the largest face of ``image`` (OpenCV Haar cascade), the face box
    enlarged by ``scale`` (:func:`bfdkern.data.transforms.square_box`, as pretraining); None when no face is
    found."""
    faces = _face_locator().locate(np.asarray(image, dtype=np.uint8))
    if not faces:
        return None
    return square_box(faces[0].face, scale, image.width, image.height)
