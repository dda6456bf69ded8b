"""Evaluation preprocessing: the same steps for every image, real or fake.

A detector must not be able to tell real from fake by the file format (PNG from a generator,
JPEG from a camera), by metadata, or by the framing. So every image, whatever its folder:

1. is decoded to RGB pixels (alpha dropped, palette expanded); all metadata is discarded, EXIF
   orientation included (it is not applied either, so a tag cannot change the pixels);
2. optionally is cropped to its largest face (OpenCV Haar cascade), the box enlarged 1.3x and made square,
   as pretraining crops faces (:class:`bfdkern.data.dataset.FaceDataset` with ``face_crop``);
3. is re-encoded as a baseline JPEG at one quality (4:2:0) and decoded again, so both classes carry
   the same compression traces;
4. becomes the encoder's input tensor through :func:`bfdkern.data.transforms.to_tensor` at one size.

:class:`Preprocessing` is a small frozen value; its :meth:`~Preprocessing.to_dict` goes into a
detector file and into the feature cache key, so features are never mixed across settings.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bfdkern.data.transforms import IMAGE_SUFFIXES, square_box


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


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
    """How an image file becomes the pixels the encoder sees.

    Args:
        jpeg_quality: re-encode every image as JPEG at this quality (1..100); None keeps the decoded
            pixels as they are (metadata is still dropped).
        face_crop: crop to the largest detected face (OpenCV Haar cascade); an image with no detected
            face is kept whole (:meth:`apply` says so; feature extraction warns with the count).
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
        """JSON-able settings (stored in detector files and feature cache keys)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        known = {k: data[k] for k in ("jpeg_quality", "face_crop", "face_scale", "size") if k in data}
        return cls(**known)

    def apply(self, data: bytes, name: str | os.PathLike = "<bytes>") -> tuple[Image.Image, bool | None]:
        """The encoded bytes of one image file -> (RGB PIL image without metadata, face_found).

        ``face_found`` is None when ``face_crop`` is off. ``name`` is only used in error messages.
        Raises :class:`ImageError` for data that is not a decodable image."""
        image = decode_rgb(data, name)
        face_found = None
        if self.face_crop:
            image, face_found = crop_largest_face(image, self.face_scale)
        if self.jpeg_quality is not None:
            image = reencode_jpeg(image, int(self.jpeg_quality))
        return image, face_found

    def load(self, path: str | os.PathLike) -> Image.Image:
        """Read and preprocess one image file (see :meth:`apply`); returns the image."""
        return self.apply(read_bytes(path), path)[0]


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a file, with an :class:`ImageError` naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def decode_rgb(data: bytes, name: str | os.PathLike = "<bytes>") -> Image.Image:
    """Decode image bytes to a fresh RGB image that carries no metadata (no EXIF, ICC, orientation)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                # Flatten transparency on black, identically for every image.
                im = im.convert("RGBA")
                rgb = Image.new("RGB", im.size)
                rgb.paste(im, mask=im.getchannel("A"))
            else:
                rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(f"{name}: empty image ({rgb.width}x{rgb.height})")
    # Rebuild from the pixels so nothing of the file's info dict survives.
    return Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB")


def reencode_jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Compress ``image`` as a baseline JPEG (4:2:0) at ``quality`` and decode it again."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0", optimize=False)
    buf.seek(0)
    with Image.open(buf) as im:
        return Image.fromarray(np.asarray(im.convert("RGB"), dtype=np.uint8), mode="RGB")


_LOCATORS = threading.local()


def _face_locator():
    # One cascade per thread: feature extraction preprocesses images in a thread pool.
    if getattr(_LOCATORS, "haar", None) is None:
        from bfdkern.data.faces import HaarFaceLocator

        _LOCATORS.haar = HaarFaceLocator()
    return _LOCATORS.haar


def crop_largest_face(image: Image.Image, scale: float = 1.3) -> tuple[Image.Image, bool]:
    """Crop ``image`` to the square around its largest face (OpenCV Haar cascade), the face box enlarged by
    ``scale``; parts outside the image are black. Returns (image, face_found); the image is returned whole
    when no face is found."""
    faces = _face_locator().locate(np.asarray(image, dtype=np.uint8))
    if not faces:
        return image, False
    box = square_box(faces[0].face, scale, image.width, image.height)
    return image.crop(box), True
