"""The one decode path: the cap policy with a reason per file, orientation, RGB, no metadata, re-encoding."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from bfdkern.data.decode import (
    DEFAULT_LIMITS,
    REASONS,
    Limits,
    UnreadableImage,
    decode_image,
    read_image_file,
    reencode_jpeg,
)


def _jpeg_bytes(width=40, height=24, seed=0, **kw) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _reason(source, **kw) -> str:
    with pytest.raises(UnreadableImage) as info:
        decode_image(source, **kw)
    assert info.value.reason in REASONS
    return info.value.reason


def test_every_failure_has_a_reason_naming_the_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"hello, not an image")
    data = _jpeg_bytes(200, 200)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    expected = {
        "empty.jpg": "empty file",
        "text.jpg": "not an image",
        "cut.jpg": "truncated or corrupt",
        "absent.jpg": "missing",
        "pipe.jpg": "not a regular file",  # refused before it is opened: no hang
        "zero.jpg": "not a regular file",
    }
    for name, reason in expected.items():
        assert _reason(tmp_path / name) == reason, name
        with pytest.raises(UnreadableImage, match=f"{name}: {reason}"):
            decode_image(tmp_path / name)


def _peak_rss_kib(code: str) -> int:
    """Peak resident memory (KiB) of a fresh Python running ``code`` (this process's peak may be anything)."""
    import subprocess
    import sys

    script = f"{code}\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


def _sparse_jpeg(path, size=2 * 2**30):
    with open(path, "wb") as f:
        f.write(_jpeg_bytes())
        f.truncate(size)  # sparse: no disk used
    return path


def test_a_sparse_2gb_file_is_refused_without_being_read(tmp_path):
    path = _sparse_jpeg(tmp_path / "huge.jpg")
    assert _reason(path) == "file too large"
    with pytest.raises(UnreadableImage, match="file too large"):
        read_image_file(path)
    assert _reason(_jpeg_bytes(), limits=Limits(max_bytes=100)) == "file too large"
    imports = "from bfdkern.data.decode import UnreadableImage, decode_image"
    code = f"""
{imports}
try:
    decode_image({str(path)!r})
except UnreadableImage as exc:
    assert exc.reason == "file too large"
"""
    assert _peak_rss_kib(code) - _peak_rss_kib(imports) < 100_000  # nowhere near the 2 GB a read would take


def test_pixel_cap_and_decompression_bomb_guard(tmp_path):
    small = _jpeg_bytes(40, 24)
    assert _reason(small, limits=Limits(max_pixels=40 * 24 - 1)) == "too many pixels"
    assert decode_image(small, limits=Limits(max_pixels=40 * 24)).size == (40, 24)
    buf = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buf, "PNG")  # 25 megapixels in ~3 kB
    assert len(buf.getvalue()) < 10_000
    assert _reason(buf.getvalue()) == "decompression bomb"
    # The same pixels are fine when the guard allows that many pixels a byte.
    assert decode_image(buf.getvalue(), limits=Limits(max_pixels_per_byte=1e5)).size == (5000, 5000)
    # A photo-like file is far below the guard.
    assert decode_image(_jpeg_bytes(2100, 2000)).size == (2100, 2000)
    assert DEFAULT_LIMITS.max_pixels == 120_000_000


def test_orientation_applied_from_path_and_bytes(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _jpeg_bytes(40, 24, exif=exif)
    (tmp_path / "rotated.jpg").write_bytes(data)
    from_path = decode_image(tmp_path / "rotated.jpg")
    from_bytes = decode_image(data)
    assert from_path.size == (24, 40) and from_path.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(from_path), np.asarray(from_bytes))
    plain = np.asarray(decode_image(_jpeg_bytes(40, 24)))
    np.testing.assert_array_equal(np.asarray(from_path), np.rot90(plain, k=-1))


def test_no_metadata_survives_and_modes_become_rgb():
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    image = decode_image(_jpeg_bytes(exif=exif))
    assert not image.info and not image.getexif()
    buf = io.BytesIO()
    Image.fromarray((np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)).save(buf, "PNG")  # 16-bit grey
    grey16 = np.asarray(decode_image(buf.getvalue()))
    assert grey16.shape == (3, 4, 3) and grey16[2, 3, 0] == (11 * 5000) >> 8 and grey16[0, 1, 1] == 5000 >> 8
    buf = io.BytesIO()
    Image.new("RGBA", (10, 12), (1, 2, 3, 4)).save(buf, "PNG")
    assert np.asarray(decode_image(buf.getvalue()))[0, 0].tolist() == [1, 2, 3]  # alpha dropped, colour kept


def test_draft_decodes_large_jpegs_at_a_reduced_scale():
    data = _jpeg_bytes(800, 600)
    assert decode_image(data).size == (800, 600)
    assert decode_image(data, draft=(200, 150)).size == (200, 150)
    png = io.BytesIO()
    Image.new("RGB", (80, 60)).save(png, "PNG")
    assert decode_image(png.getvalue(), draft=(20, 15)).size == (80, 60)  # only JPEGs have a DCT scale


def test_reencode_is_one_jpeg_round_trip():
    px = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = np.asarray(reencode_jpeg(px, 75))
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=75, subsampling="4:2:0")
    np.testing.assert_array_equal(out, np.asarray(Image.open(buf)))
    with pytest.raises(ValueError, match="1..100"):
        reencode_jpeg(px, 0)


def test_the_dataset_applies_the_same_caps(tmp_path):
    """FaceDataset skips a file over the byte cap with its reason, without reading it (EXIF included)."""
    from bfdkern.data.simulator import simulate_collection

    simulate_collection(tmp_path, 4, seed=0, size=32)
    huge = _sparse_jpeg(tmp_path / "huge.jpg")
    imports = "from bfdkern.data import FaceDataset\nfrom bfdkern.tasks import blades_spec"
    code = f"""
{imports}
ds = FaceDataset({str(tmp_path)!r}, blades_spec(), size=32)
assert len(ds) == 4 and ({str(huge)!r}, "file too large") in ds.skipped_files, ds.skipped_files
"""
    assert _peak_rss_kib(code) - _peak_rss_kib(imports) < 200_000
