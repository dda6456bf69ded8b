"""The one image preprocessing path after decoding (:mod:`bfdkern.data.decode`): crop a square, resize,
convert to a tensor.

Training (:mod:`bfdkern.data.dataset`), feature extraction and detection all go through these functions, so
an image is seen the same way everywhere: a square crop (a face box or the centre), resized to
``size x size`` with one filter, float ``[0, 1]``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
"""File suffixes (lower case) treated as images when a folder is scanned."""

RESIZE_FILTER = Image.Resampling.BICUBIC

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""


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
