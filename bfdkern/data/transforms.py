"""The one image preprocessing path: decode a file, crop a square, resize, convert to a tensor.

Training (:mod:`bfdkern.data.dataset`), feature extraction and detection all go through these functions, so
an image is seen the same way everywhere: EXIF orientation applied, RGB, a square crop (a face box or the
centre), resized to ``size x size`` with one filter, float ``[0, 1]``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from bfdkern.exif.reader import NotARegularFileError, open_regular

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
"""File suffixes (lower case) treated as images when a folder is scanned."""

RESIZE_FILTER = Image.Resampling.BICUBIC
MAX_PIXELS = 120_000_000
"""Images with more pixels are refused (decompression bombs)."""

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""


class UnreadableImage(ValueError):
    """An image file that cannot be decoded; ``reason`` is a short countable category."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def load_image(path: str | os.PathLike, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``path`` fully into an RGB image with its EXIF orientation applied.

    Args:
        draft: optional (width, height) the caller needs at least; JPEGs are then decoded at a reduced
            DCT scale that still covers it (much faster for large photos).

    Raises:
        UnreadableImage: with ``reason`` one of ``missing``, ``unreadable``, ``not a regular file`` (a FIFO,
            device or socket: never opened for reading, it could block or never end), ``empty file``,
            ``not an image``, ``too large``, ``truncated or corrupt``.
    """
    path = Path(path)
    try:
        fh = open_regular(path)
    except NotARegularFileError as exc:
        raise UnreadableImage(path, "not a regular file", str(exc).split(": ", 1)[-1]) from None
    except FileNotFoundError:
        raise UnreadableImage(path, "missing") from None
    except OSError as exc:
        raise UnreadableImage(path, "unreadable", exc.strerror or str(exc)) from None
    with fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise UnreadableImage(path, "empty file")
        return _decode(fh, path, draft)


def _decode(fh, path: Path, draft: tuple[int, int] | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise UnreadableImage(path, "too large", f"{im.width}x{im.height} pixels")
                if draft is not None and im.format == "JPEG":
                    im.draft("RGB", draft)
                im.load()
                im = ImageOps.exif_transpose(im)
                return im.convert("RGB") if im.mode != "RGB" else im.copy()
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(path, "too large", str(exc).split(".")[0]) from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage(path, "not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(path, "truncated or corrupt", str(exc).strip()[:120]) from None


def load_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the upright image (EXIF orientation applied) from its header, without decoding.
    Raises :class:`UnreadableImage` as :func:`load_image` does."""
    path = Path(path)
    try:
        fh = open_regular(path)
    except NotARegularFileError as exc:
        raise UnreadableImage(path, "not a regular file", str(exc).split(": ", 1)[-1]) from None
    except OSError as exc:
        raise UnreadableImage(path, "missing" if isinstance(exc, FileNotFoundError) else "unreadable") from None
    try:
        with fh, Image.open(fh) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Image.UnidentifiedImageError:
        raise UnreadableImage(path, "not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(path, "truncated or corrupt", str(exc).strip()[:120]) from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def square_box(box: Box, factor: float, width: int, height: int) -> Box:
    """The square of side ``factor * max(box side)`` centred on ``box``, moved inside the ``width x height``
    image where it fits (it may exceed the image only when it is larger than the image)."""
    x0, y0, x1, y1 = box
    side = max(1, round(factor * max(x1 - x0, y1 - y0)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    nx0, ny0 = round(cx - side / 2), round(cy - side / 2)
    nx0 = min(max(nx0, 0), width - side) if side <= width else round((width - side) / 2)
    ny0 = min(max(ny0, 0), height - side) if side <= height else round((height - side) / 2)
    return nx0, ny0, nx0 + side, ny0 + side


def center_box(width: int, height: int) -> Box:
    """The largest centred square of a ``width x height`` image."""
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def fit_square(image: Image.Image | np.ndarray, size: int, box: Box | None = None) -> np.ndarray:
    """Crop ``box`` (default: the centred square; parts outside the image are black) and resize it to
    ``size x size``. Returns uint8 ``[size, size, 3]``. An image already ``size x size`` is not resampled."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(_as_rgb_array(image))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if box is None:
        box = center_box(image.width, image.height)
    if tuple(box) != (0, 0, image.width, image.height):
        image = image.crop(tuple(int(v) for v in box))
    if image.size != (size, size):
        image = image.resize((size, size), RESIZE_FILTER, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8).copy()


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


def to_tensor(image: Image.Image | np.ndarray, size: int = 224, box: Box | None = None) -> torch.Tensor:
    """The model input for one image: the centred square (or ``box``) resized to ``size``; float32
    ``[3, size, size]`` in ``[0, 1]`` (the model normalises it)."""
    return array_to_tensor(fit_square(image, size, box))


def _as_rgb_array(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got dtype {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    raise ValueError(f"expected an image array [H, W, 3], got shape {image.shape}")
