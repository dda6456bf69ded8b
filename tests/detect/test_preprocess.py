"""Evaluation preprocessing: identical for every image, metadata gone, one JPEG quality, clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from bfdkern.detect.preprocess import ImageError, Preprocessing, list_images


def _photo(seed=0, size=48):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _encode(array, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def test_same_pixels_give_the_same_output_whatever_the_container_or_metadata():
    """A PNG, a PNG with alpha, and a lossless WebP of the same pixels, with or without EXIF, come out identical."""
    px = _photo()
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0112] = 6  # Orientation: would rotate if applied
    rgba = np.dstack([px, np.full(px.shape[:2], 255, np.uint8)])
    files = [
        _encode(px, "PNG"),
        _encode(px, "PNG", exif=exif),
        _encode(rgba, "PNG"),
        _encode(px, "WEBP", lossless=True, exif=exif),
    ]
    prep = Preprocessing(jpeg_quality=90)
    outs = [np.asarray(prep.apply(f, f"file{i}")[0]) for i, f in enumerate(files)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    assert outs[0].shape == px.shape  # orientation tag not applied


def test_output_carries_no_metadata_and_is_jpeg_compressed():
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    data = _encode(_photo(1), "JPEG", quality=100, exif=exif)
    image, face = Preprocessing(jpeg_quality=75).apply(data, "x.jpg")
    assert face is None
    assert not image.info and not image.getexif()
    # The output equals one explicit JPEG round trip at quality 75 of the decoded pixels.
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    again = np.asarray(Image.open(io.BytesIO(_encode(decoded, "JPEG", quality=75, subsampling="4:2:0"))))
    np.testing.assert_array_equal(np.asarray(image), again)


def test_no_reencode_keeps_pixels():
    px = _photo(2)
    image, _ = Preprocessing(jpeg_quality=None).apply(_encode(px, "PNG"))
    np.testing.assert_array_equal(np.asarray(image), px)


def test_settings_round_trip_and_validation():
    prep = Preprocessing(jpeg_quality=80, face_crop=True, face_scale=1.5, size=64)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    with pytest.raises(ValueError, match="jpeg_quality"):
        Preprocessing(jpeg_quality=0)


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg: not a readable image"):
        Preprocessing().load(bad)
    with pytest.raises(ImageError, match="gone.png: cannot be read"):
        Preprocessing().load(tmp_path / "gone.png")


def test_list_images(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "sub").mkdir()
    for name in ("b.PNG", "sub/a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["b.PNG", "a.jpg"]


def test_face_crop_on_real_photos(shared_data):
    """On real group photos the crop finds a face and returns a square around it."""
    folder = shared_data / "faces" / "faces_with_exif"
    paths = sorted(folder.glob("*.jp*g"))[:3]
    if not paths:
        pytest.skip("no face photos in the shared data")
    prep = Preprocessing(jpeg_quality=95, face_crop=True)
    found = 0
    for p in paths:
        image, face = prep.apply(p.read_bytes(), p)
        if face:
            found += 1
            assert image.width == image.height
            with Image.open(p) as original:
                assert image.width < max(original.size)
    assert found >= 1
