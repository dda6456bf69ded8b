"""The camera simulator: real JPEGs whose EXIF reads back with the values chosen, deterministic under a
seed, and each EXIF value leaving a measurable trace in the pixels; uncamera images without one."""

from fractions import Fraction

import cv2
import numpy as np
import pyexiv2
import pytest
from PIL import Image
from scipy.stats import spearmanr

from bfdkern.data.simulator import (
    MAKES,
    draw_settings,
    photograph,
    read_labels,
    simulate_collection,
    simulate_uncamera,
)
from bfdkern.exif import labels_of, read_exif


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    out = tmp_path_factory.mktemp("cam")
    paths = simulate_collection(out, 80, seed=11, size=64, missing=0.1)
    return paths, read_labels(out)


def test_jpegs_carry_the_exif_the_simulator_chose(collection):
    paths, rows = collection
    assert [p.name for p in paths] == [r["file"] for r in rows]
    absent = 0
    for path, row in zip(paths, rows):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (64, 64)
        with pyexiv2.Image(str(path)) as img:
            exif = img.read_exif()
        expected = {
            "Exif.Image.Make": row["make"],
            "Exif.Image.Model": row["model"],
            "Exif.Photo.ISOSpeedRatings": row["iso"],
            "Exif.Photo.FNumber": row["aperture"],
            "Exif.Photo.ExposureTime": row["exposure_time"],
            "Exif.Photo.FocalLength": row["focal_length"],
            "Exif.Photo.MeteringMode": row["metering_mode"],
            "Exif.Photo.ExposureMode": row["exposure_mode"],
            "Exif.Photo.WhiteBalance": row["white_balance"],
            "Exif.Photo.ExposureProgram": row["exposure_program"],
        }
        for key, value in expected.items():
            if value == "":
                assert key not in exif, f"{path.name}: {key} should be absent"
                absent += 1
            elif key in ("Exif.Photo.FNumber", "Exif.Photo.ExposureTime", "Exif.Photo.FocalLength"):
                assert float(Fraction(exif[key])) == pytest.approx(float(value), rel=1e-12), (path.name, key)
            else:
                assert exif[key] == value, (path.name, key)
    assert 0 < absent < 0.25 * len(rows) * len(expected)  # missing = 0.1 per tag


def test_project_reader_gets_the_same_labels(collection):
    paths, rows = collection
    canonical = {m.exif_make: m.name for m in MAKES}
    for path, row in list(zip(paths, rows))[:20]:
        labels, _ = labels_of(read_exif(path))
        for task in ("iso", "aperture", "exposure_time", "focal_length"):
            assert labels[task] == (None if row[task] == "" else pytest.approx(float(row[task]))), (path.name, task)
        assert labels["make"] == (canonical[row["make"]] if row["make"] else None)


def test_same_seed_same_files(tmp_path):
    a = simulate_collection(tmp_path / "a", 4, seed=3, size=48)
    b = simulate_collection(tmp_path / "b", 4, seed=3, size=48)
    c = simulate_collection(tmp_path / "c", 4, seed=4, size=48)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert all(x.read_bytes() != y.read_bytes() for x, y in zip(a, c))
    assert (tmp_path / "a" / "labels.csv").read_text() == (tmp_path / "b" / "labels.csv").read_text()


def _skin_noise(image: np.ndarray, row: dict) -> float:
    """Median absolute high-pass residual on the cheeks (smooth skin between the eyes and the mouth)."""
    box = {p: [int(row[f"{p}_{c}"]) for c in ("x0", "y0", "x1", "y1")] for p in ("face", "eyes", "mouth")}
    gray = image.astype(np.float32).mean(axis=2)
    residual = gray - cv2.GaussianBlur(gray, (0, 0), 1.0)
    y0, y1 = box["eyes"][3] + 1, box["mouth"][1]
    left = residual[y0:y1, box["face"][0] + 4 : box["mouth"][0] - 1]
    right = residual[y0:y1, box["mouth"][2] + 1 : box["face"][2] - 4]
    return float(np.median(np.abs(np.concatenate([left.ravel(), right.ravel()]))))


def test_iso_and_exposure_time_are_measurable_across_a_collection(collection):
    paths, rows = collection
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    have_iso = [i for i, r in enumerate(rows) if r["iso"]]
    iso = [float(rows[i]["iso"]) for i in have_iso]
    noise = [_skin_noise(images[i], rows[i]) for i in have_iso]
    assert spearmanr(iso, noise).statistic > 0.7
    have_t = [i for i, r in enumerate(rows) if r["exposure_time"]]
    brightness = [images[i].mean() for i in have_t]
    assert spearmanr([float(rows[i]["exposure_time"]) for i in have_t], brightness).statistic > 0.7


def _shot(seed: int, **settings) -> tuple[np.ndarray, object]:
    """The same scene and noise draws, with some settings overridden: only their trace differs."""
    rng = np.random.default_rng(seed)
    chosen = draw_settings(rng)
    chosen.update(settings)
    image, parts = photograph(rng, chosen, 64)
    return image.astype(np.float32), parts


def _corner_detail(image: np.ndarray) -> float:
    lap = np.abs(cv2.Laplacian(image.mean(axis=2), cv2.CV_32F))
    return float(np.mean([lap[:12, :12].mean(), lap[:12, -12:].mean()]))  # background corners


BASE = {"iso": 100, "exposure_time": (1, 250), "white_balance": 0, "focal_length": 50, "aperture": (16, 1)}


@pytest.mark.parametrize("seed", range(4))
def test_each_setting_leaves_its_physical_trace(seed):
    # Aperture: a wide aperture blurs the background.
    wide, _ = _shot(seed, **{**BASE, "aperture": (18, 10)})
    narrow, parts = _shot(seed, **BASE)
    assert _corner_detail(wide) < 0.5 * _corner_detail(narrow)
    # Focal length: a long lens magnifies the background wall (fewer tile edges in view).
    short, _ = _shot(seed, **{**BASE, "focal_length": 24})
    long, _ = _shot(seed, **{**BASE, "focal_length": 135})
    assert _corner_detail(long) < 0.9 * _corner_detail(short)
    # Exposure time: brighter, and camera shake smears the face's detail.
    fast, _ = _shot(seed, **{**BASE, "exposure_time": (1, 2000)})
    slow, _ = _shot(seed, **{**BASE, "exposure_time": (1, 15)})
    x0, y0, x1, y1 = parts.face
    detail = lambda im: np.abs(cv2.Laplacian(im.mean(axis=2), cv2.CV_32F))[y0:y1, x0:x1].mean() / im.mean()
    assert slow.mean() > 1.5 * fast.mean()
    assert detail(slow) < 0.8 * detail(fast)
    # ISO: more noise at the same scene.
    low, _ = _shot(seed, **BASE)
    # (The same noise draws scaled by the ISO's noise level: the difference to ISO 100 grows with ISO.)
    diffs = [np.abs(_shot(seed, **{**BASE, "iso": iso})[0] - low).mean() for iso in (400, 1600, 6400)]
    assert diffs[0] < diffs[1] < diffs[2] and diffs[2] > 2.0
    # White balance: auto removes the illuminant's cast, manual keeps it.
    red_blue = lambda im: np.log(im[..., 0].mean() / im[..., 2].mean())
    for wb, lo, hi in ((0, 0.0, 0.05), (1, 0.4, 3.0)):
        warm, _ = _shot(seed, **{**BASE, "white_balance": wb, "illuminant": 1.0})
        cool, _ = _shot(seed, **{**BASE, "white_balance": wb, "illuminant": -1.0})
        assert lo <= abs(red_blue(warm) - red_blue(cool)) <= hi, wb
    # Make: its colour matrix (saturation) differs.
    chroma = lambda im: (im - im.mean(axis=2, keepdims=True)).std()
    canon, _ = _shot(seed, **{**BASE, "make": MAKES[0]})
    samsung, _ = _shot(seed, **{**BASE, "make": MAKES[4]})
    assert chroma(samsung) > 1.2 * chroma(canon)


def test_makes_leave_their_jpeg_signature(tmp_path, collection):
    paths, rows = collection
    tables = {}
    for path, row in zip(paths, rows):
        with Image.open(path) as im:
            tables.setdefault(row["make"] or None, set()).add(tuple(im.quantization[0]))
    named = {k: v for k, v in tables.items() if k}
    assert len(named) == len(MAKES)
    assert all(len(v) == 1 for v in named.values())  # one quality per make
    assert len({next(iter(v)) for v in named.values()}) == len(MAKES)  # and a different one for each


def test_uncamera_images_skipped_the_camera(tmp_path, collection):
    paths = simulate_uncamera(tmp_path / "gen", 12, seed=5, size=64)
    rows = read_labels(tmp_path / "gen")
    assert [r["kind"] for r in rows[:4]] == ["clean", "resynth", "clean", "resynth"]
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (64, 64)
        with pyexiv2.Image(str(path)) as img:
            assert img.read_exif() == {}
    clean = [
        _skin_noise(np.asarray(Image.open(p).convert("RGB")), r) for p, r in zip(paths, rows) if r["kind"] == "clean"
    ]
    cam_paths, cam_rows = collection
    camera = [
        _skin_noise(np.asarray(Image.open(p).convert("RGB")), r)
        for p, r in zip(cam_paths, cam_rows)
        if r["iso"] and int(r["iso"]) >= 800
    ]
    assert max(clean) < np.median(camera)
