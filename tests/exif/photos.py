"""Photos the EXIF tests make themselves: small JPEGs with known tags (Pillow for the pixels,
pyexiv2 for the EXIF, rationals always written as "n/d") and hostile files crafted byte by byte."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image

# A camera-like set of tags (exiv2 keys -> stored strings) and the values they must parse to.
CAMERA_TAGS = {
    "Exif.Image.Make": "NIKON CORPORATION",
    "Exif.Photo.FNumber": "28/10",
    "Exif.Photo.ExposureTime": "1/60",
    "Exif.Photo.FocalLength": "50/1",
    "Exif.Photo.ISOSpeedRatings": "400",
    "Exif.Photo.MeteringMode": "5",
    "Exif.Photo.ExposureMode": "1",
    "Exif.Photo.WhiteBalance": "0",
    "Exif.Photo.ExposureProgram": "3",
}
CAMERA_LABELS = {
    "aperture": 2.8,
    "exposure_time": 1 / 60,
    "focal_length": 50.0,
    "iso": 400.0,
    "make": "Nikon",
    "metering_mode": "pattern",
    "exposure_mode": "manual",
    "white_balance": "auto",
    "exposure_program": "aperture_priority",
}


def jpeg_bytes(size: tuple[int, int] = (16, 16), color: tuple[int, int, int] = (120, 80, 40)) -> bytes:
    """A small JPEG without EXIF."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def write_photo(path: Path, tags: dict[str, str] | None = None, color=(120, 80, 40)) -> Path:
    """A 16 x 16 JPEG at ``path`` carrying ``tags`` (exiv2 keys -> strings; default CAMERA_TAGS)."""
    import pyexiv2

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(color=color))
    tags = CAMERA_TAGS if tags is None else tags
    if tags:
        with pyexiv2.Image(str(path)) as image:
            image.modify_exif(tags)
    return path


# --- crafted EXIF blocks -------------------------------------------------------------------------
ASCII, SHORT, LONG, RATIONAL = 2, 3, 4, 5


def _entry(tag: int, typ: int, count: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")


def _ifd(entries: list[bytes], next_offset: int) -> bytes:
    return struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", next_offset)


def with_app1(tiff: bytes, jpeg: bytes | None = None) -> bytes:
    """A JPEG whose APP1 segment holds the TIFF structure ``tiff`` (inserted right after SOI)."""
    jpeg = jpeg or jpeg_bytes()
    payload = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def looping_exif() -> bytes:
    """IFD0 (Make "Canon") whose Exif-IFD pointer and next-IFD pointer both point back to IFD0."""
    ifd0_at = 8
    data_at = ifd0_at + 2 + 2 * 12 + 4
    entries = [
        _entry(0x010F, ASCII, 6, struct.pack("<I", data_at)),
        _entry(0x8769, LONG, 1, struct.pack("<I", ifd0_at)),
    ]
    tiff = b"II*\0" + struct.pack("<I", ifd0_at) + _ifd(entries, ifd0_at) + b"Canon\0"
    return with_app1(tiff)


def out_of_range_exif() -> bytes:
    """Offsets past the end of the block: Make's text, FNumber's rational, a 2^30-value ISO array;
    ExposureTime (1/60) is the one valid tag."""
    ifd0_at = 8
    exif_at = ifd0_at + 2 + 2 * 12 + 4
    data_at = exif_at + 2 + 3 * 12 + 4
    ifd0 = _ifd(
        [
            _entry(0x010F, ASCII, 16, struct.pack("<I", 0x7FFFFFF0)),
            _entry(0x8769, LONG, 1, struct.pack("<I", exif_at)),
        ],
        0,
    )
    exif = _ifd(
        [
            _entry(0x829A, RATIONAL, 1, struct.pack("<I", data_at)),
            _entry(0x829D, RATIONAL, 1, struct.pack("<I", 0xFFFFFF00)),
            _entry(0x8827, SHORT, 0x40000000, struct.pack("<I", data_at)),
        ],
        0,
    )
    tiff = b"II*\0" + struct.pack("<I", ifd0_at) + ifd0 + exif + struct.pack("<II", 1, 60)
    return with_app1(tiff)


def dangling_exif_pointer() -> bytes:
    """IFD0 with Make "Sony" and an Exif-IFD pointer far past the end of the block."""
    ifd0_at = 8
    data_at = ifd0_at + 2 + 2 * 12 + 4
    entries = [
        _entry(0x010F, ASCII, 5, struct.pack("<I", data_at)),
        _entry(0x8769, LONG, 1, struct.pack("<I", 0xFFFFFFF0)),
    ]
    return with_app1(b"II*\0" + struct.pack("<I", ifd0_at) + _ifd(entries, 0) + b"Sony\0")


def bomb(jpeg: bytes, width: int = 60000, height: int = 60000) -> bytes:
    """``jpeg`` with its frame header (SOF0) declaring ``width`` x ``height`` pixels: a
    decompression bomb of a few hundred bytes."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def app1_end(jpeg: bytes) -> int:
    """Offset just past the APP1 (EXIF) segment of ``jpeg``."""
    at = jpeg.index(b"\xff\xe1")
    return at + 2 + struct.unpack(">H", jpeg[at + 2 : at + 4])[0]


TYPE_SIZES = {1: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, 7: 1}


def exif_jpeg(exif_entries: list[tuple[int, int, bytes]], ifd0_entries: list[tuple[int, int, bytes]] = ()) -> bytes:
    """A small JPEG whose EXIF holds exactly the given entries, each ``(tag, type, value bytes)``
    (little-endian; the count follows from the type's size): any type for any tag, any length.
    ``ifd0_entries`` go to IFD0, ``exif_entries`` to the Exif IFD (pointed to from IFD0)."""
    ifd0 = sorted(ifd0_entries) + [(0x8769, LONG, b"")]  # the Exif-IFD pointer, filled below
    exif = sorted(exif_entries)
    ifd0_at = 8
    exif_at = ifd0_at + 2 + 12 * len(ifd0) + 4
    data_at = exif_at + 2 + 12 * len(exif) + 4
    data = bytearray()

    def entries(items):
        out = []
        for tag, typ, value in items:
            if tag == 0x8769:
                out.append(_entry(tag, LONG, 1, struct.pack("<I", exif_at)))
                continue
            count = max(1, len(value) // TYPE_SIZES[typ])
            if len(value) <= 4:
                out.append(_entry(tag, typ, count, value))
            else:
                out.append(_entry(tag, typ, count, struct.pack("<I", data_at + len(data))))
                data.extend(value + (b"\0" if len(value) % 2 else b""))
        return out

    tiff = b"II*\0" + struct.pack("<I", ifd0_at) + _ifd(entries(ifd0), 0) + _ifd(entries(exif), 0)
    return with_app1(tiff + bytes(data))


def ascii_value(text: str) -> bytes:
    """An EXIF ASCII value: the text and its terminating NUL."""
    return text.encode("latin-1") + b"\0"
