"""The one decode path: an image file becomes RGB pixels the same way for pretraining and detection.

Every image, whoever reads it (:class:`bfdkern.data.FaceDataset`, feature extraction, ``detect``, ``evaluate``,
the fit commands, the baselines), goes through :func:`decode_image`:

1. **The file.** It must be a regular file (FIFOs, devices and sockets are refused before they are opened; a
   link is followed and its target checked) of at most :attr:`Limits.max_bytes` bytes (checked with ``stat``
   before reading, so a 2 GB sparse ``.jpg`` is never read).
2. **The header.** The declared width x height must not exceed :attr:`Limits.max_pixels`, and a file may not
   declare more than :attr:`Limits.max_pixels_per_byte` pixels per byte of file beyond
   :data:`BOMB_FLOOR_PIXELS` (the decompression-bomb guard: a few kilobytes that expand to hundreds of
   megabytes). Both are checked before any pixel is decoded.
3. **Decoding.** The first frame is decoded completely; a truncated file is an error, never padded with grey.
   ``draft`` (pretraining's speed option for large photos) lets a JPEG be decoded at a reduced DCT scale.
4. **Orientation.** The EXIF orientation tag is applied (the photo as its camera meant it to be seen); an
   unreadable EXIF block leaves the pixels as stored.
5. **RGB.** Palette images are expanded, grey is replicated, CMYK converted, 16-bit samples keep their top
   8 bits, and an alpha channel is dropped (the colour values are kept).
6. **No metadata.** The result is a fresh image built from the pixels: no EXIF, ICC profile or text chunk
   survives, so nothing but pixels reaches a model.

:func:`reencode_jpeg` is the optional re-encode (one JPEG quality for every image, so the classes carry the
same compression traces). Errors are :class:`UnreadableImage` with a short countable ``reason``.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

BOMB_FLOOR_PIXELS = 4_000_000
"""Images up to this many pixels are never taken for decompression bombs (they cannot hurt)."""

REASONS = {
    "missing": "the file does not exist",
    "not a regular file": "a FIFO, device, socket or folder, refused before it is opened",
    "unreadable file": "the file exists but cannot be read (permissions, I/O error)",
    "empty file": "the file has no bytes",
    "file too large": "more bytes than the file-size cap (Limits.max_bytes)",
    "too many pixels": "the declared width x height exceeds the pixel cap (Limits.max_pixels)",
    "decompression bomb": "far more pixels declared than the file's size can hold (Limits.max_pixels_per_byte)",
    "not an image": "no image decoder recognises the data",
    "truncated or corrupt": "an image header, but the pixel data is cut short or damaged",
}
"""Every ``reason`` an :class:`UnreadableImage` can carry, with what it means."""


class UnreadableImage(ValueError):
    """An image file that cannot be decoded; ``reason`` is one of :data:`REASONS` (countable), the message
    names the file."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Limits:
    """The cap policy every reader of images applies (one for every command and the Python dataset).

    Args:
        max_bytes: largest file read, in bytes (default 512 MiB, as ``bfdkern index``).
        max_pixels: largest declared width x height (default 120 megapixels).
        max_pixels_per_byte: decompression-bomb guard: declared pixels per byte of file, allowed beyond
            :data:`BOMB_FLOOR_PIXELS` (default 1000; photos and generated faces hold under 10).
    """

    max_bytes: int = 512 * 2**20
    max_pixels: int = 120_000_000
    max_pixels_per_byte: float = 1000.0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or not self.max_pixels_per_byte > 0:
            raise ValueError(f"image limits must be positive, got {self}")


DEFAULT_LIMITS = Limits()


def check_file(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> int:
    """The size in bytes of ``path`` once it passes step 1 (a non-empty regular file within the byte cap);
    raises :class:`UnreadableImage` otherwise. Nothing is opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnreadableImage(path, "missing") from None
    except OSError as exc:
        raise UnreadableImage(path, "unreadable file", exc.strerror or str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableImage(path, "not a regular file")
    if st.st_size == 0:
        raise UnreadableImage(path, "empty file")
    if st.st_size > limits.max_bytes:
        raise UnreadableImage(
            path, "file too large", f"{st.st_size:,} bytes, more than the {limits.max_bytes:,} allowed"
        )
    return st.st_size


def read_image_file(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The bytes of an image file that passes :func:`check_file` (at most ``limits.max_bytes`` are read, even
    when the file grows meanwhile)."""
    check_file(path, limits)
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise UnreadableImage(path, "unreadable file", exc.strerror or str(exc)) from None
    if len(data) > limits.max_bytes:
        raise UnreadableImage(path, "file too large", f"grew past the {limits.max_bytes:,} bytes allowed")
    if not data:
        raise UnreadableImage(path, "empty file")
    return data


def check_header(width: int, height: int, file_bytes: int, name, limits: Limits = DEFAULT_LIMITS) -> None:
    """Step 2: refuse a declared size over the pixel cap or beyond the decompression-bomb guard."""
    pixels = int(width) * int(height)
    if pixels > limits.max_pixels:
        raise UnreadableImage(name, "too many pixels", f"{width}x{height}, more than {limits.max_pixels:,}")
    if pixels > BOMB_FLOOR_PIXELS and pixels > limits.max_pixels_per_byte * file_bytes:
        raise UnreadableImage(
            name,
            "decompression bomb",
            f"{width}x{height} pixels declared in {file_bytes:,} bytes, more than {limits.max_pixels_per_byte:g} a byte",
        )


def decode_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | os.PathLike | None = None,
    draft: tuple[int, int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Image.Image:
    """An image file (a path, or its bytes) -> a fresh RGB image, EXIF orientation applied, no metadata.

    Args:
        source: the file's path, or its bytes (as read by :func:`read_image_file`).
        name: the file named in errors (default: the path, or ``<bytes>``).
        draft: optional (width, height) the caller needs at least; a JPEG is then decoded at the smallest DCT
            scale that still covers it (pretraining's speed option for large photos).
        limits: the cap policy (:class:`Limits`).

    Raises:
        UnreadableImage: with ``reason`` one of :data:`REASONS`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name if name is not None else "<bytes>"
        size = len(source)
        if size == 0:
            raise UnreadableImage(name, "empty file")
        if size > limits.max_bytes:
            raise UnreadableImage(name, "file too large", f"{size:,} bytes, more than the {limits.max_bytes:,} allowed")
        opened = io.BytesIO(bytes(source))
    else:
        name = name if name is not None else source
        size = check_file(source, limits)
        opened = source
    with decoder_errors(name), Image.open(opened) as im:
        check_header(im.width, im.height, size, name, limits)
        if draft is not None and im.format == "JPEG":
            im.draft("RGB", tuple(int(v) for v in draft))
        im.load()
        return _rgb_pixels(_oriented(im), name)


def image_size(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> tuple[int, int]:
    """(width, height) of the upright image (EXIF orientation applied) from its header, without decoding the
    pixels; steps 1 and 2 of :func:`decode_image` apply, and its errors."""
    size = check_file(path, limits)
    with decoder_errors(path), Image.open(path) as im:
        check_header(im.width, im.height, size, path, limits)
        width, height = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@contextlib.contextmanager
def decoder_errors(name):
    """Whatever Pillow raises on a damaged file, as an :class:`UnreadableImage` naming ``name``."""
    try:
        yield
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own hard limit, above ours unless a user raised ours
        raise UnreadableImage(name, "too many pixels", str(exc).split(",")[0]) from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage(name, "not an image") from None
    except FileNotFoundError:
        raise UnreadableImage(name, "missing") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, MemoryError) as exc:
        raise UnreadableImage(name, "truncated or corrupt", str(exc).strip()[:120]) from None


def _oriented(im: Image.Image) -> Image.Image:
    """Step 4: the EXIF orientation applied; an unreadable EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # a damaged EXIF block must not make a decodable photo unreadable
        return im


def _rgb_pixels(im: Image.Image, name) -> Image.Image:
    """Steps 5 and 6: 8-bit RGB, built afresh from the pixels so that no metadata survives."""
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = (np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        array = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        array = np.asarray(im.convert("RGB") if im.mode != "RGB" else im, dtype=np.uint8)
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise UnreadableImage(name, "truncated or corrupt", "no pixels")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def encode_jpeg(image: Image.Image | np.ndarray, quality: int) -> bytes:
    """RGB pixels as a baseline JPEG file: the IJG quantisation tables scaled to ``quality`` (1..100), 4:2:0
    chroma subsampling, no optimised Huffman tables, no metadata."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image, mode="RGB")
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0", optimize=False)
    return buf.getvalue()


def reencode_jpeg(image: Image.Image | np.ndarray, quality: int) -> Image.Image:
    """:func:`encode_jpeg` then decode: the optional re-encode that gives every image the same compression
    traces."""
    with Image.open(io.BytesIO(encode_jpeg(image, quality))) as im:
        return Image.fromarray(np.asarray(im.convert("RGB"), dtype=np.uint8), mode="RGB")
