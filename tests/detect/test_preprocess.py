"""Evaluation preprocessing: one decode path with pretraining, identical for every image, metadata gone, the
re-encode after the resize, clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from bfdkern.data.decode import decode_image
from bfdkern.data.transforms import fit_square
from bfdkern.detect.preprocess import PIPELINE, ImageError, Preprocessing, list_images, pipeline_warning


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
    rgba = np.dstack([px, np.full(px.shape[:2], 255, np.uint8)])
    files = [
        _encode(px, "PNG"),
        _encode(px, "PNG", exif=exif),
        _encode(rgba, "PNG"),
        _encode(px, "WEBP", lossless=True, exif=exif),
    ]
    prep = Preprocessing(jpeg_quality=90, size=32)
    outs = [prep.apply(f, f"file{i}")[0] for i, f in enumerate(files)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    assert outs[0].shape == (32, 32, 3) and outs[0].dtype == np.uint8


def test_orientation_is_applied_as_in_pretraining():
    """The EXIF orientation tag rotates the pixels exactly as the pretraining dataset's decode does."""
    px = _photo(1, 40)[:, :24]  # 40 high, 24 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(px, "PNG", exif=exif)
    prep = Preprocessing(jpeg_quality=None, size=24)
    out, _ = prep.apply(data, "rotated.png")
    expected = fit_square(np.rot90(px, k=-1).copy(), 24)  # the displayed image, 24 high and 40 wide
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, fit_square(decode_image(data), 24))


def test_output_is_the_resize_then_one_jpeg_round_trip():
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    data = _encode(_photo(1, 64), "JPEG", quality=100, exif=exif)
    out, face = Preprocessing(jpeg_quality=75, size=32).apply(data, "x.jpg")
    assert face is None
    resized = fit_square(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), 32)
    again = np.asarray(Image.open(io.BytesIO(_encode(resized, "JPEG", quality=75, subsampling="4:2:0"))))
    np.testing.assert_array_equal(out, again)


def test_no_reencode_keeps_pixels():
    px = _photo(2, 32)
    out, _ = Preprocessing(jpeg_quality=None, size=32).apply(_encode(px, "PNG"))
    np.testing.assert_array_equal(out, px)


def test_settings_round_trip_with_the_pipeline_version():
    prep = Preprocessing(jpeg_quality=80, face_crop=True, face_scale=1.5, size=64)
    assert prep.to_dict()["pipeline"] == PIPELINE
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    with pytest.raises(ValueError, match="jpeg_quality"):
        Preprocessing(jpeg_quality=0)
    assert pipeline_warning({"preprocessing": prep.to_dict()}, "d.npz") is None
    old = {k: v for k, v in prep.to_dict().items() if k != "pipeline"}
    assert "d.npz was fitted on features of preprocessing pipeline 1" in pipeline_warning(
        {"preprocessing": old}, "d.npz"
    )


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 a JPEG marker, then nothing")
    with pytest.raises(ImageError, match="broken.jpg: truncated or corrupt") as info:
        Preprocessing().load(bad)
    assert info.value.reason == "truncated or corrupt"
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="text.png: not an image"):
        Preprocessing().load(tmp_path / "text.png")
    with pytest.raises(ImageError, match="gone.png: missing"):
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
    """On real group photos the crop finds a face: the output differs from the centred square of the photo."""
    folder = shared_data / "faces" / "faces_with_exif"
    paths = sorted(folder.glob("*.jp*g"))[:3]
    if not paths:
        pytest.skip("no face photos in the shared data")
    prep = Preprocessing(jpeg_quality=None, face_crop=True, size=64)
    found = 0
    for p in paths:
        out, face = prep.apply(p.read_bytes(), p)
        assert out.shape == (64, 64, 3)
        if face:
            found += 1
            assert not np.array_equal(out, fit_square(decode_image(p), 64))
    assert found >= 1
