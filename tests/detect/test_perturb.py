"""Robustness perturbations, verified on generated images: the JPEG really is written at the stated quality
(its quantisation tables), the blur has the stated sigma, the resize uses the stated filter, the noise is
seeded; parsing names what is wrong."""

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from bfdkern.data.decode import encode_jpeg
from bfdkern.detect.formats import estimate_jpeg_quality, ijg_table
from bfdkern.detect.perturb import RESIZE_FILTERS, Perturbation


def _image(seed=0, size=64):
    """A smooth gradient with texture (JPEG-compressible, not flat)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 3, yy * 3, (xx + yy) * 2], axis=2) % 256
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("quality", [95, 75, 30])
def test_jpeg_is_written_at_the_stated_quality(quality):
    x = _image(1)
    data = encode_jpeg(x, quality)
    with Image.open(io.BytesIO(data)) as im:
        assert list(im.quantization[0]) == ijg_table(quality).tolist()  # luminance
        assert list(im.quantization[1]) == ijg_table(quality, chroma=True).tolist()  # chrominance
        assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0
    assert estimate_jpeg_quality(Image.open(io.BytesIO(data)).quantization[0]) == (quality, True)
    out = Perturbation.parse(f"jpeg={quality}").apply(x)
    np.testing.assert_array_equal(out, _decode(data))
    for other in (quality - 1, quality + 1):
        assert not np.array_equal(out, _decode(encode_jpeg(x, other)))


def test_ijg_tables_are_libjpeg_s():
    assert ijg_table(50).reshape(8, 8)[0].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]  # the standard table
    assert ijg_table(100).tolist() == [1] * 64
    assert ijg_table(95)[:4].tolist() == [2, 1, 1, 2]  # (16 * 10 + 50) // 100 = 2, (11 * 10 + 50) // 100 = 1
    assert ijg_table(10)[0] == 80  # scale 5000 / 10 = 500: (16 * 500 + 50) // 100


def _edge_profile(sigma: float, width: int = 41) -> np.ndarray:
    """255 x the cumulative sum of a Gaussian of standard deviation ``sigma`` sampled at whole pixels and cut at
    4 sigma: a black-to-white step (at pixel 20.5) blurred by that Gaussian, written from the definition."""
    radius = int(4 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    step = (np.arange(width) >= 21).astype(float) * 255
    return np.convolve(np.pad(step, radius, mode="edge"), kernel, mode="valid")


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.0])
def test_blur_has_the_stated_sigma(sigma):
    """A vertical black-to-white edge comes out as the edge blurred by a Gaussian of exactly that sigma (to the
    uint8 rounding), and visibly unlike 10% more or less."""
    x = np.zeros((9, 41, 3), np.uint8)
    x[:, 21:] = 255
    out = Perturbation.parse(f"blur={sigma}").apply(x)[4, :, 0].astype(np.float64)
    assert np.abs(out - _edge_profile(sigma)).max() <= 0.51
    for wrong in (0.9 * sigma, 1.1 * sigma):
        assert np.abs(out - _edge_profile(wrong)).max() > 1.5
    # The kernel behind the profile has variance sigma^2 (the definition, checked).
    radius = int(4 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    k = np.exp(-(taps**2) / (2 * sigma**2))
    assert (k * taps**2).sum() / k.sum() == pytest.approx(sigma**2, rel=0.03)  # sampled: 2% low at 0.6


@pytest.mark.parametrize("name", ["bicubic", "bilinear", "nearest", "lanczos"])
def test_resize_uses_the_stated_filter(name):
    x = _image(2)
    spec = "resize=0.5" if name == "bicubic" else f"resize=0.5:{name}"
    out = Perturbation.parse(spec).apply(x)
    filt = RESIZE_FILTERS[name]
    expected = np.asarray(Image.fromarray(x).resize((32, 32), filt).resize((64, 64), filt))
    np.testing.assert_array_equal(out, expected)
    other = RESIZE_FILTERS["box" if name != "box" else "nearest"]
    assert not np.array_equal(out, np.asarray(Image.fromarray(x).resize((32, 32), other).resize((64, 64), other)))
    assert out.shape == x.shape


def test_noise_is_seeded_by_seed_and_image():
    x = np.full((64, 64, 3), 128, np.uint8)
    p = Perturbation.parse("noise=4", seed=3)
    a, b = p.apply(x, "ab" * 32), p.apply(x, "ab" * 32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, p.apply(x, "cd" * 32))
    assert not np.array_equal(a, Perturbation.parse("noise=4", seed=4).apply(x, "ab" * 32))
    assert np.std(a.astype(float) - 128) == pytest.approx(4, rel=0.1)
    assert p.key() == "noise=4@seed=3" and Perturbation.parse("jpeg=90", seed=3).key() == "jpeg=90"


def test_chains_apply_left_to_right_and_keep_their_names():
    x = _image(3)
    chain = Perturbation.parse("blur=1+jpeg=75")
    assert chain.name == "blur=1+jpeg=75"
    np.testing.assert_array_equal(
        chain.apply(x), Perturbation.parse("jpeg=75").apply(Perturbation.parse("blur=1").apply(x))
    )
    assert Perturbation.parse("resize=0.5:bilinear").name == "resize=0.5:bilinear"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jpeg", "not KIND=VALUE"),
        ("sharpen=2", "not KIND=VALUE"),
        ("jpeg=101", "1..100"),
        ("jpeg=9.5", "whole number"),
        ("blur=0", "positive"),
        ("blur=x", "not a number"),
        ("resize=1", "not 1"),
        ("resize=0.5:cubic", "unknown filter"),
        ("blur=1:bicubic", "only resize takes a filter"),
        ("blur=1+", "chained with '\\+'"),
    ],
)
def test_bad_specs_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        Perturbation.parse(text)
