"""What the test images are as files: format, size, JPEG quality and chroma subsampling per class, content
hashes, and a warning when the classes differ in a way a detector can exploit.

A detector can score well by telling camera JPEGs from a generator's PNGs (or one JPEG quality from another, or
one image size from another) without looking at faces at all: the known format shortcut. ``bfdkern evaluate``
reports each class's files (every real source and every generator) and warns when they differ, suggesting the
re-encode option that gives every image the same compression (``--jpeg-quality``, on by default).

The JPEG quality is estimated from the file's luminance quantisation table against the IJG (libjpeg) standard
table scaled to each quality 1..100 (:func:`ijg_table`); a file written by libjpeg, Pillow or OpenCV matches
one exactly.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin
from tqdm.auto import tqdm

from bfdkern.data.decode import DEFAULT_LIMITS, Limits, UnreadableImage, check_header, read_image_file

IJG_LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
"""The JPEG standard's luminance quantisation table (Annex K), natural order: libjpeg's quality 50."""
IJG_CHROMINANCE = ((17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
                   (47, 66, 99, 99, 99, 99, 99, 99), *([(99,) * 8] * 4))  # fmt: skip
"""The JPEG standard's chrominance quantisation table (Annex K), natural order."""
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def ijg_table(quality: int, chroma: bool = False) -> np.ndarray:
    """libjpeg's quantisation table for ``quality`` (1..100), int [64] in natural (row-major) order:
    ``clip((base * scale + 50) // 100, 1, 255)`` with ``scale = 5000 / q`` below 50 and ``200 - 2 q`` from 50."""
    q = int(quality)
    if not 1 <= q <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    scale = 5000 // q if q < 50 else 200 - 2 * q
    base = np.asarray(IJG_CHROMINANCE if chroma else IJG_LUMINANCE, dtype=np.int64).reshape(-1)
    return np.clip((base * scale + 50) // 100, 1, 255)


_TABLES = np.stack([ijg_table(q) for q in range(1, 101)])


def estimate_jpeg_quality(luminance_table) -> tuple[int, bool]:
    """(quality 1..100, exact): the IJG quality whose luminance table is closest (sum of absolute differences)
    to ``luminance_table`` (64 values, natural order); ``exact`` when it is that table."""
    t = np.asarray(luminance_table, dtype=np.int64).reshape(-1)
    if t.shape != (64,):
        raise ValueError(f"a quantisation table has 64 entries, got {t.shape}")
    dist = np.abs(_TABLES - t).sum(1)
    best = int(np.argmin(dist))
    return best + 1, bool(dist[best] == 0)


@dataclass(frozen=True)
class FileInfo:
    """One file as a file: bytes, sha256, format and declared size, JPEG quality and chroma subsampling; or the
    ``error`` that makes it unusable."""

    path: Path
    size_bytes: int = 0
    sha256: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    jpeg_quality: int | None = None
    subsampling: str | None = None
    error: UnreadableImage | None = None


def inspect_file(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> FileInfo:
    """The :class:`FileInfo` of one file: its bytes are read (within the cap policy) and hashed, its header
    parsed; no pixel is decoded."""
    path = Path(path)
    try:
        data = read_image_file(path, limits)
    except UnreadableImage as exc:
        return FileInfo(path, error=exc)
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_header(im.width, im.height, len(data), path, limits)
            quality = sampling = None
            if im.format == "JPEG" and getattr(im, "quantization", None):
                quality = estimate_jpeg_quality(im.quantization[0])[0]
                sampling = SUBSAMPLING.get(JpegImagePlugin.get_sampling(im), "other")
            return FileInfo(path, len(data), digest, im.format, im.width, im.height, quality, sampling)
    except UnreadableImage as exc:
        return FileInfo(path, len(data), digest, error=exc)
    except Image.UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        return FileInfo(path, len(data), digest, error=UnreadableImage(path, "not an image"))
    except Exception as exc:  # any header a decoder refuses: recorded, not raised
        return FileInfo(path, len(data), digest, error=UnreadableImage(path, "truncated or corrupt", str(exc)[:120]))


def inspect_files(paths, limits: Limits = DEFAULT_LIMITS, workers: int = 2, progress: bool = True) -> list[FileInfo]:
    """:func:`inspect_file` of every path, in order (threads read and hash while others parse)."""
    paths = list(paths)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        it = pool.map(lambda p: inspect_file(p, limits), paths)
        return list(tqdm(it, total=len(paths), desc="files", unit="file", disable=not progress, leave=False))


def summarize(infos: list[FileInfo]) -> dict:
    """One class's files in numbers: counts, format shares, sizes, JPEG qualities and subsampling (JSON-able)."""
    ok = [i for i in infos if i.error is None]
    formats = Counter(i.format for i in ok)
    pixels = np.array([i.width * i.height for i in ok], dtype=np.float64)
    sides = Counter(f"{i.width}x{i.height}" for i in ok)
    qualities = [i.jpeg_quality for i in ok if i.jpeg_quality is not None]
    return {
        "files": len(infos),
        "unreadable": len(infos) - len(ok),
        "formats": {f: n / len(ok) for f, n in formats.most_common()} if ok else {},
        "median_megapixels": float(np.median(pixels) / 1e6) if ok else None,
        "most_common_size": sides.most_common(1)[0][0] if ok else None,
        "most_common_size_share": sides.most_common(1)[0][1] / len(ok) if ok else None,
        "median_kilobytes": float(np.median([i.size_bytes for i in ok]) / 1024) if ok else None,
        "jpeg_quality_median": float(np.median(qualities)) if qualities else None,
        "jpeg_quality_range": [int(min(qualities)), int(max(qualities))] if qualities else None,
        "subsampling": dict(Counter(i.subsampling for i in ok if i.subsampling).most_common()),
    }


def _main_format(summary: dict) -> tuple[str | None, float]:
    if not summary["formats"]:
        return None, 0.0
    fmt, share = next(iter(summary["formats"].items()))
    return fmt, share


def shortcut_warnings(reals: dict[str, dict], fakes: dict[str, dict], reencode: dict[str, int | None]) -> list[str]:
    """One line per (real source, generator) pair whose files differ in a way a detector can exploit: the main
    format, the JPEG quality (median 5 or more apart), the chroma subsampling, or the image size (median pixel
    count 2x apart, or one fixed size against varied ones); then one line of advice (none when nothing differs).

    Args:
        reals, fakes: name -> :func:`summarize` of that class.
        reencode: detector name -> the JPEG quality its preprocessing re-encodes every image at (None: it does not).
    """
    lines = []
    for rname, r in reals.items():
        for fname, f in fakes.items():
            found = []
            rf, rs = _main_format(r)
            ff, fs = _main_format(f)
            if rf and ff and rf != ff:
                found.append(f"{rname} is {rs:.0%} {rf}, {fname} is {fs:.0%} {ff}")
            elif rf and ff and abs(r["formats"].get("JPEG", 0) - f["formats"].get("JPEG", 0)) >= 0.2:
                found.append(
                    f"JPEG share {r['formats'].get('JPEG', 0):.0%} ({rname}) vs {f['formats'].get('JPEG', 0):.0%} ({fname})"
                )
            rq, fq = r["jpeg_quality_median"], f["jpeg_quality_median"]
            if rq is not None and fq is not None and abs(rq - fq) >= 5:
                found.append(f"median JPEG quality {rq:.0f} ({rname}) vs {fq:.0f} ({fname})")
            rsub, fsub = next(iter(r["subsampling"]), None), next(iter(f["subsampling"]), None)
            if rsub and fsub and rsub != fsub:
                found.append(f"chroma subsampling {rsub} ({rname}) vs {fsub} ({fname})")
            rp, fp = r["median_megapixels"], f["median_megapixels"]
            if rp and fp and max(rp, fp) / min(rp, fp) >= 2:
                found.append(f"median size {rp:.2f} MP ({rname}) vs {fp:.2f} MP ({fname})")
            elif rp and fp and (r["most_common_size_share"] >= 0.9) != (f["most_common_size_share"] >= 0.9):
                found.append(f"sizes {_sizes(r)} ({rname}) vs {_sizes(f)} ({fname})")
            if found:
                lines.append(f"{rname} vs {fname}: " + "; ".join(found))
    return [*lines, _advice(reencode)] if lines else []


def _sizes(summary: dict) -> str:
    if summary["most_common_size_share"] >= 0.9:
        return f"all {summary['most_common_size']}"
    return "varied"


def _advice(reencode: dict[str, int | None]) -> str:
    plain = [name for name, q in reencode.items() if q is None]
    text = "a detector can separate these classes by their files alone (the format shortcut)"
    if plain:
        return (
            f"{text}: {', '.join(plain)} do(es) not re-encode; refit with --jpeg-quality 95 so that every image "
            "reaches the encoder with the same compression, and check with --perturb jpeg=75"
        )
    return (
        f"{text}; the detectors re-encode every image at one quality after resizing, which removes most of it: "
        "check the results under --perturb jpeg=75 and --perturb resize=0.5"
    )


def format_report(summaries: dict[str, dict]) -> str:
    """The classes' files as a text table: files, unreadable, formats, median size, JPEG quality, subsampling."""
    width = max(len("class"), *(len(n) for n in summaries))
    head = f"{'class':<{width}}  {'files':>6}  {'bad':>4}  {'formats':<22}  {'median size':<16}  {'JPEG q':<10}  chroma"
    lines = [head, "-" * len(head)]
    for name, s in summaries.items():
        fmts = ", ".join(f"{f} {share:.0%}" for f, share in list(s["formats"].items())[:2]) or "-"
        size = f"{s['median_megapixels']:.2f} MP" if s["median_megapixels"] is not None else "-"
        if s["most_common_size_share"] and s["most_common_size_share"] >= 0.9:
            size = s["most_common_size"]
        q = s["jpeg_quality_range"]
        quality = "-" if q is None else (f"{q[0]}" if q[0] == q[1] else f"{q[0]}-{q[1]}")
        chroma = ", ".join(s["subsampling"]) or "-"
        lines.append(
            f"{name:<{width}}  {s['files']:>6}  {s['unreadable']:>4}  {fmts:<22}  {size:<16}  {quality:<10}  {chroma}"
        )
    return "\n".join(lines)
