"""The files of each class: JPEG quality from the quantisation tables, formats and sizes, and the warning when
real and fake files differ in a way a detector can exploit."""

import io

import numpy as np
import pytest
from PIL import Image

from bfdkern.detect.formats import (
    estimate_jpeg_quality,
    format_report,
    inspect_file,
    inspect_files,
    shortcut_warnings,
    summarize,
)


def _save(path, fmt="JPEG", size=(40, 30), seed=0, **kw):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, fmt, **kw)
    return path


@pytest.mark.parametrize("quality", [1, 10, 49, 50, 51, 75, 90, 95, 99, 100])
def test_jpeg_quality_is_read_back_exactly(quality):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG", quality=quality)
    assert estimate_jpeg_quality(Image.open(buf).quantization[0]) == (quality, True)


def test_foreign_tables_get_the_nearest_quality():
    from bfdkern.detect.formats import ijg_table

    table = ijg_table(90).copy()
    table[63] += 1  # another encoder's table, one step away from libjpeg's quality 90
    assert estimate_jpeg_quality(table) == (90, False)


def test_inspect_file_reports_format_size_quality_and_hash(tmp_path):
    import hashlib

    jpg = _save(tmp_path / "a.jpg", quality=80, subsampling="4:4:4")
    png = _save(tmp_path / "b.png", "PNG", size=(64, 64))
    a, b = inspect_file(jpg), inspect_file(png)
    assert (a.format, a.width, a.height, a.jpeg_quality, a.subsampling) == ("JPEG", 40, 30, 80, "4:4:4")
    assert a.sha256 == hashlib.sha256(jpg.read_bytes()).hexdigest() and a.error is None
    assert (b.format, b.width, b.height, b.jpeg_quality) == ("PNG", 64, 64, None)
    (tmp_path / "c.jpg").write_text("not an image")
    bad = inspect_file(tmp_path / "c.jpg")
    assert bad.error is not None and bad.error.reason == "not an image" and bad.sha256 is not None
    assert inspect_file(tmp_path / "gone.jpg").error.reason == "missing"


def test_png_fakes_against_jpeg_reals_warn_and_suggest_the_reencode(tmp_path):
    reals = [_save(tmp_path / f"r{i}.jpg", quality=90, size=(60 + i, 40), seed=i) for i in range(6)]
    fakes = [_save(tmp_path / f"f{i}.png", "PNG", size=(64, 64), seed=10 + i) for i in range(6)]
    r, f = summarize(inspect_files(reals, progress=False)), summarize(inspect_files(fakes, progress=False))
    assert r["formats"] == {"JPEG": 1.0} and r["jpeg_quality_median"] == 90 and f["formats"] == {"PNG": 1.0}
    lines = shortcut_warnings({"camera": r}, {"sdxl": f}, {"oc": None})
    assert "camera is 100% JPEG, sdxl is 100% PNG" in lines[0]
    assert "oc do(es) not re-encode; refit with --jpeg-quality 95" in lines[-1]
    mitigated = shortcut_warnings({"camera": r}, {"sdxl": f}, {"oc": 95})
    assert "re-encode every image at one quality" in mitigated[-1] and "--perturb jpeg=75" in mitigated[-1]
    text = format_report({"camera (real)": r, "sdxl (fake)": f})
    assert "JPEG 100%" in text and "PNG 100%" in text and "64x64" in text


def test_jpeg_quality_and_subsampling_differences_warn_and_equal_classes_do_not(tmp_path):
    a = [_save(tmp_path / f"a{i}.jpg", quality=95, seed=i) for i in range(4)]
    b = [_save(tmp_path / f"b{i}.jpg", quality=75, seed=9 + i, subsampling="4:4:4") for i in range(4)]
    c = [_save(tmp_path / f"c{i}.jpg", quality=95, seed=20 + i) for i in range(4)]
    sa, sb, sc = (summarize(inspect_files(x, progress=False)) for x in (a, b, c))
    (line, _) = shortcut_warnings({"r": sa}, {"g": sb}, {"oc": None})
    assert "median JPEG quality 95 (r) vs 75 (g)" in line and "chroma subsampling 4:2:0 (r) vs 4:4:4 (g)" in line
    assert shortcut_warnings({"r": sa}, {"g": sc}, {"oc": None}) == []


def test_a_file_no_decoder_knows_is_named_not_its_buffer(tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"plain text, not an image")
    info = inspect_file(path)
    assert str(info.error) == f"{path}: not an image"  # not "cannot identify image file <_io.BytesIO ...>"
