"""Reading the raw EXIF strings of the nine tasks' tags from a file or from bytes, behind one small
backend interface.

Two backends serve: ``pyexiv2`` (exiv2; GPLv3, the default: faster, reads RAW and HEIF files) and
``pillow`` (Pillow's ``getexif()``; MIT-style licence, for users who cannot take GPL code). Both
return the same thing, :class:`RawExif`: standard EXIF tag names mapped to the stored value as a
string in exiv2's notation (rationals ``"n/d"``, several values separated by spaces, text as
stored). The pyexiv2 backend adds the maker-note ISO tags of
:data:`bfdkern.exif.parse.MAKER_TAGS` under exiv2's names without ``Exif.`` (``"Nikon3.ISOSpeed"``:
exiv2 decodes maker notes, Pillow does not). pyexiv2 is imported only when its backend is built,
so the Pillow backend needs no GPL code at all.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image, UnidentifiedImageError

from bfdkern.data.decode import DEFAULT_LIMITS
from bfdkern.exif.parse import EXIF_TAGS, MAKER_TAGS, TagValue, parse_tags

MAX_PIXELS = DEFAULT_LIMITS.max_pixels
"""Declared pixel count above which a file is refused (the cap policy of every image reader, data/decode.py)."""

READ_REASONS: dict[str, str] = {
    "unreadable": "the file could not be opened or read (permissions, vanished)",
    "not_a_regular_file": "a FIFO, socket, device or folder (never read: it could block or never end)",
    "empty_file": "the file has 0 bytes",
    "unrecognised_format": "the backend does not recognise the format (not an image, or a format it cannot read)",
    "corrupt": "the backend failed inside the file's structure (truncated, broken offsets)",
    "decompression_bomb": f"the declared size exceeds {MAX_PIXELS:,} pixels",
}
"""Why a whole file could not be read, as :class:`ExifReadError` reports it."""

TAG_IDS: dict[str, int] = {
    "FNumber": 0x829D,
    "ApertureValue": 0x9202,
    "ExposureTime": 0x829A,
    "ShutterSpeedValue": 0x9201,
    "FocalLength": 0x920A,
    "ISOSpeedRatings": 0x8827,
    "Make": 0x010F,
    "MeteringMode": 0x9207,
    "ExposureMode": 0xA402,
    "WhiteBalance": 0xA403,
    "ExposureProgram": 0x8822,
}
"""EXIF tag numbers of :data:`bfdkern.exif.parse.EXIF_TAGS`. Both backends look in the Exif IFD
first, then in IFD0 (TIFF/EP files and some editors keep them there)."""

Source = bytes | str | os.PathLike


class ExifReadError(Exception):
    """A file whose EXIF cannot be read; ``reason`` is one of :data:`READ_REASONS`, the message
    names the file and the problem."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RawExif:
    """The raw EXIF of one file.

    Args:
        tags: EXIF tag name (``"FNumber"``, ``"Make"``, ... see :data:`bfdkern.exif.parse.EXIF_TAGS`;
            with the pyexiv2 backend also the maker-note tags of :data:`bfdkern.exif.parse.MAKER_TAGS`,
            ``"CanonSi.ISOSpeed"``, ...) -> stored value as a string; tags the file lacks are absent.
            Empty when the file has no EXIF.
        width, height: declared image size in pixels; 0 when the backend does not know it.
    """

    tags: dict[str, str] = field(default_factory=dict)
    width: int = 0
    height: int = 0


class ExifBackend(Protocol):
    """What a reader backend provides: a name and ``read``."""

    name: str

    def read(self, data: bytes, label: str = "<bytes>") -> RawExif:
        """The raw EXIF of an image held in ``data``; ``label`` names it in errors.
        Raises ExifReadError."""
        ...


def _check_pixels(width: int, height: int, label: str) -> None:
    """The pixel cap of every image reader (data/decode.py). Only the cap: reading metadata decodes no pixels, so
    a small file declaring a large image (a RAW header, a truncated photo) is no bomb here."""
    if width * height > MAX_PIXELS:
        raise ExifReadError(
            "decompression_bomb", f"{label}: declares {width} x {height} pixels, more than the {MAX_PIXELS:,} allowed"
        )


class Pyexiv2Backend:
    """exiv2 through pyexiv2 (GPLv3). Mutes exiv2's own warnings on stderr: failures come back as
    :class:`ExifReadError` instead.

    Args:
        low_level: read through pyexiv2's compiled ``exiv2api`` module and decode only the eleven
            tags needed and the maker-note ISO tags (2.5x faster than ``pyexiv2.ImageData``, whose
            ``read_exif`` decodes every tag, maker notes included, and whose ``close`` walks the
            object). ``None``: when available.
    """

    name = "pyexiv2"

    def __init__(self, low_level: bool | None = None) -> None:
        try:
            import pyexiv2  # lazy: optional dependency (pyexiv2, GPL; backend='pillow' runs without it)
        except ImportError as exc:
            raise ImportError(
                f"the pyexiv2 EXIF backend needs the pyexiv2 package ({exc}); install it or use backend='pillow'"
            ) from None
        pyexiv2.set_log_level(4)
        self._pyexiv2 = pyexiv2
        api = getattr(getattr(pyexiv2, "lib", None), "exiv2api", None)
        available = all(hasattr(api, n) for n in ("Buffer", "Image"))
        if low_level and not available:
            raise ImportError(f"pyexiv2 {pyexiv2.__version__} has no lib.exiv2api.Buffer/Image; use low_level=None")
        self._api = api if (low_level is None and available) or low_level else None
        # exiv2 names a tag it does not expect in IFD0 by number ("Exif.Image.0xa402").
        self._keys = {
            tag: (f"Exif.Photo.{tag}", f"Exif.Image.{tag}", f"Exif.Image.0x{TAG_IDS[tag]:04x}") for tag in EXIF_TAGS
        }
        self._keys.update({tag: (f"Exif.{tag}",) for tag in MAKER_TAGS})  # "Exif.Nikon3.ISOSpeed"
        self._wanted = {key.encode(): tag for tag, keys in self._keys.items() for key in keys}

    def read(self, data: bytes, label: str = "<bytes>") -> RawExif:
        if not data:
            raise ExifReadError("empty_file", f"{label}: the file is empty (0 bytes)")
        try:
            found = self._read_low_level(data, label) if self._api is not None else self._read_public(data, label)
        except ExifReadError:
            raise
        except Exception as exc:  # exiv2 reports every failure as RuntimeError with a message
            text = str(exc)
            reason = "unrecognised_format" if ("unknown image type" in text or "input data" in text) else "corrupt"
            raise ExifReadError(reason, f"{label}: exiv2 cannot read it: {text}") from None
        width, height, exif = found
        tags = {}
        for tag, keys in self._keys.items():
            for key in keys:
                value = exif.get(key)
                if value is not None:
                    tags[tag] = value
                    break
        return RawExif(tags, width, height)

    def _read_public(self, data: bytes, label: str) -> tuple[int, int, dict[str, str]]:
        with self._pyexiv2.ImageData(data) as image:
            width, height = image.get_pixel_width(), image.get_pixel_height()
            _check_pixels(width, height, label)
            # latin-1 decodes any byte: a non-UTF-8 comment elsewhere must not sink the file.
            exif = image.read_exif(encoding="latin-1")
        return width, height, {k: v[0] if isinstance(v, list) else v for k, v in exif.items()}  # repeated: first

    def _read_low_level(self, data: bytes, label: str) -> tuple[int, int, dict[str, str]]:
        buffer = self._api.Buffer(data, len(data))
        try:
            image = self._api.Image(buffer)
            try:
                width, height = image.get_pixel_width(), image.get_pixel_height()
                _check_pixels(width, height, label)
                exif = {}
                for datum in image.read_exif():
                    key = datum["tag"]
                    if key in self._wanted:
                        value = datum["value"]
                        if isinstance(value, list | tuple):
                            value = value[0] if value else b""
                        exif.setdefault(key.decode("ascii"), value.decode("latin-1"))  # repeated: the first
            finally:
                image.close_image()
        finally:
            buffer.destroy()
        return width, height, exif


def _pillow_text(value) -> str:
    # Pillow's types -> exiv2's notation, so both backends hand the parser the same strings.
    if isinstance(value, tuple):
        return " ".join(_pillow_text(v) for v in value)
    if isinstance(value, bytes):
        return " ".join(str(b) for b in value)
    if hasattr(value, "numerator") and hasattr(value, "denominator") and not isinstance(value, int):
        return f"{value.numerator}/{value.denominator}"  # IFDRational keeps the stored pair, even n/0
    return str(value)


class PillowBackend:
    """Pillow's ``getexif()`` (no GPL code)."""

    name = "pillow"
    _EXIF_IFD = 0x8769

    def read(self, data: bytes, label: str = "<bytes>") -> RawExif:
        if not data:
            raise ExifReadError("empty_file", f"{label}: the file is empty (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # DecompressionBombWarning, truncated-EXIF warnings
                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
                    _check_pixels(width, height, label)
                    exif = image.getexif()
                    sub = exif.get_ifd(self._EXIF_IFD)
        except ExifReadError:
            raise
        except Image.DecompressionBombError as exc:
            raise ExifReadError("decompression_bomb", f"{label}: {exc}") from None
        except UnidentifiedImageError:
            raise ExifReadError("unrecognised_format", f"{label}: Pillow does not recognise the format") from None
        except Exception as exc:  # Pillow raises many types on broken files (SyntaxError, struct.error, ...)
            raise ExifReadError("corrupt", f"{label}: Pillow cannot read it: {type(exc).__name__}: {exc}") from None
        tags = {}
        for tag, tag_id in TAG_IDS.items():
            value = sub.get(tag_id, exif.get(tag_id))
            if value is not None:
                tags[tag] = _pillow_text(value)
        return RawExif(tags, width, height)


BACKENDS = {"pyexiv2": Pyexiv2Backend, "pillow": PillowBackend}
"""Backend name -> class."""


def get_backend(backend: str | ExifBackend = "pyexiv2") -> ExifBackend:
    """A backend by name (``"pyexiv2"`` or ``"pillow"``); a backend object is returned as is."""
    if not isinstance(backend, str):
        return backend
    try:
        return BACKENDS[backend]()
    except KeyError:
        raise ValueError(f"unknown EXIF backend {backend!r}; expected one of {sorted(BACKENDS)}") from None


class NotARegularFileError(OSError):
    """A path that names a FIFO, socket, device or folder where a file was expected."""


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def file_kind(mode: int) -> str:
    """What a stat mode names, in words (``"a FIFO (named pipe)"``, ``"a regular file"``, ...)."""
    return next((kind for test, kind in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode) else "special")


def open_regular(path: str | os.PathLike) -> io.BufferedReader:
    """``path`` opened for binary reading, only when it is a regular file once links are followed: a FIFO
    would block the reader forever and a device (``/dev/zero``) never ends. Opens without blocking, then
    checks what it opened (no race between a check and the open).

    Raises:
        NotARegularFileError: naming the path and what it is.
        OSError: when it cannot be opened at all.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        kind = None
        if exc.errno == errno.ENXIO:  # a socket (or a device without a driver) cannot be opened at all
            with suppress(OSError):
                kind = file_kind(os.stat(name).st_mode)
        if kind is None:
            raise
        raise NotARegularFileError(f"{name}: {kind}, not a regular file") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFileError(f"{name}: {file_kind(mode)}, not a regular file")
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of ``path``; ExifReadError ``unreadable`` (or ``not_a_regular_file``) naming the file
    when it cannot be read."""
    try:
        with open_regular(path) as fh:
            return fh.read()
    except NotARegularFileError as exc:
        raise ExifReadError("not_a_regular_file", str(exc)) from None
    except OSError as exc:
        raise ExifReadError("unreadable", f"{os.fspath(path)}: cannot read the file: {exc.strerror or exc}") from None


def read_raw(source: Source, backend: str | ExifBackend = "pyexiv2") -> RawExif:
    """The raw EXIF strings of a file path or of image bytes. Raises ExifReadError."""
    reader = get_backend(backend)
    if isinstance(source, bytes | bytearray | memoryview):
        return reader.read(bytes(source))
    return reader.read(read_bytes(source), os.fspath(source))


def read_exif(source: Source, backend: str | ExifBackend = "pyexiv2") -> dict[str, TagValue]:
    """The nine tasks' values of one file (path or bytes), keyed by task name, each a
    :class:`~bfdkern.exif.parse.TagValue` (value in its unit, or None with a reason).
    Raises ExifReadError when the file cannot be read at all."""
    return parse_tags(read_raw(source, backend).tags)
