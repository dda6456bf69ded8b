"""Face manipulations: soft masks inside their box, labels consistent with the kind, local flips change
only their region, the warp is the piecewise-affine map it claims, originals get the same resampling."""

import numpy as np
import pytest
from PIL import Image

from bfdkern.data.faces import FaceParts
from bfdkern.data.manipulations import (
    BLEND_RATIOS,
    KINDS,
    REGIONS,
    draw_warp,
    manipulate,
    save_examples,
    soft_mask,
    warp_field,
)
from bfdkern.data.simulator import example_face


@pytest.fixture(scope="module")
def face():
    return example_face(size=64, seed=1)


@pytest.mark.parametrize("box", [(10, 20, 40, 30), (0, 0, 64, 64), (50, 3, 64, 17), (5, 5, 8, 9), (0, 40, 30, 64)])
def test_soft_mask_stays_inside_its_box(box):
    mask = soft_mask((64, 64), box, np.random.default_rng(0))
    x0, y0, x1, y1 = box
    inside = np.zeros((64, 64), bool)
    inside[y0:y1, x0:x1] = True
    assert mask.shape == (64, 64) and mask.dtype == np.float32
    assert mask.min() >= 0 and mask.max() <= 1 + 1e-6
    assert (mask[~inside] == 0).all()
    assert mask.max() > 0.5  # not eroded away
    if min(x1 - x0, y1 - y0) >= 10:
        assert mask.max() > 0.999  # the core is fully replaced


@pytest.mark.parametrize("kind", KINDS)
def test_labels_match_the_kind_and_masks_lie_inside_the_image(face, kind):
    image, parts = face
    for seed in range(3):
        out, labels = manipulate(image, parts, np.random.default_rng(seed), kind=kind)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert labels["kind"] == kind
        assert labels["manipulated"] == int(kind != "original")
        assert (labels["mouth"], labels["eye"]) == (int("mouth" in REGIONS[kind]), int("eye" in REGIONS[kind]))
        mask = labels["mask"]
        assert mask.shape == image.shape[:2]
        if kind == "original":
            assert labels["box"] is None and not mask.any()
            continue
        x0, y0, x1, y1 = labels["box"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        outside = np.ones(mask.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert mask.any() and not mask[outside].any()
        expected_box = {"eye_flip_h": parts.eyes, "warp": parts.face}.get(kind, parts.mouth)
        assert labels["box"] == expected_box


@pytest.mark.parametrize("kind", ["mouth_flip_both", "mouth_flip_h", "eye_flip_h", "warp"])
def test_changes_only_inside_the_region_and_originals_share_the_resampling(face, kind):
    image, parts = face
    for seed in range(4):
        # Same seed: the same sub-pixel shift is drawn first, so outside the region both are identical.
        out, labels = manipulate(image, parts, np.random.default_rng(seed), kind=kind)
        ref, _ = manipulate(image, parts, np.random.default_rng(seed), kind="original")
        changed = np.abs(out.astype(int) - ref.astype(int)).max(axis=2) > 0
        x0, y0, x1, y1 = labels["box"]
        region = np.zeros(changed.shape, bool)
        region[max(0, y0 - 1) : y1, max(0, x0 - 1) : x1] = True  # bilinear resampling reads one pixel ahead
        assert changed.sum() > 5, "the manipulation changed nothing"
        assert not changed[~region].any()
    # The original itself was resampled (not passed through untouched).
    ref, _ = manipulate(image, parts, np.random.default_rng(0), kind="original")
    assert not np.array_equal(ref, image)


def test_blend_ratio_and_kind_frequencies(face):
    image, parts = face
    blends, kinds = [], []
    for seed in range(400):
        _, labels = manipulate(image, parts, np.random.default_rng(seed))
        kinds.append(labels["kind"])
        if labels["kind"] in ("mouth_flip_both", "mouth_flip_h", "eye_flip_h"):
            blends.append(labels["blend"])
    assert set(blends) <= set(BLEND_RATIOS)
    share = np.mean(np.array(blends) == 0.75)
    n = len(blends)
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)
    assert abs(kinds.count("original") / 400 - 0.5) < 4 * np.sqrt(0.25 / 400)


def _reference_field(shape, box, disp):
    """Barycentric interpolation over an explicit triangle mesh, pixel by pixel, in float64."""
    h, w = shape
    x0, y0, x1, y1 = box
    g = disp.shape[1] - 1
    out = np.zeros((2, h, w))
    lattice = lambda i, j: np.array([x0 + j * (x1 - x0) / g, y0 + i * (y1 - y0) / g])
    triangles = []
    for i in range(g):
        for j in range(g):
            triangles.append(((i, j), (i, j + 1), (i + 1, j + 1)))
            triangles.append(((i, j), (i + 1, j), (i + 1, j + 1)))
    for y in range(y0, y1):
        for x in range(x0, x1):
            p = np.array([x + 0.5, y + 0.5])
            for tri in triangles:
                a, b, c = (lattice(*v) for v in tri)
                lam = np.linalg.solve(np.array([b - a, c - a]).T, p - a)
                weights = np.array([1 - lam.sum(), lam[0], lam[1]])
                if (weights >= -1e-9).all():
                    out[:, y, x] = sum(wt * disp[:, v[0], v[1]] for wt, v in zip(weights, tri))
                    break
    return out


def test_warp_field_is_the_piecewise_affine_interpolation():
    rng = np.random.default_rng(5)
    box = (3, 4, 23, 20)
    disp = draw_warp(rng, box, 0.045)
    assert (disp[:, 0, :] == 0).all() and (disp[:, :, -1] == 0).all() and disp[:, 2, 2].any()
    dx, dy = warp_field((24, 26), box, disp)
    ref = _reference_field((24, 26), box, disp.astype(np.float64))
    np.testing.assert_allclose(dx, ref[0], atol=1e-5)
    np.testing.assert_allclose(dy, ref[1], atol=1e-5)


def test_warp_displacement_scale():
    box = (0, 0, 100, 100)
    inner = np.concatenate([draw_warp(np.random.default_rng(s), box, 0.045)[:, 1:-1, 1:-1].ravel() for s in range(200)])
    assert abs(inner.std() / 100 - 0.045) < 0.003


def test_bad_inputs_are_named(face):
    image, parts = face
    with pytest.raises(ValueError, match="unknown manipulation 'nose_flip'"):
        manipulate(image, parts, np.random.default_rng(0), kind="nose_flip")
    tiny = FaceParts(parts.face, parts.eyes, (70, 70, 80, 80))
    with pytest.raises(ValueError, match=r"mouth box \(70, 70, 80, 80\) has less than 2x2 pixels inside the 64x64"):
        manipulate(image, tiny, np.random.default_rng(0), kind="mouth_flip_h")
    with pytest.raises(ValueError, match="expected a uint8 image"):
        manipulate(image.astype(np.float32), parts, np.random.default_rng(0))


def test_save_examples_writes_a_grid(tmp_path, face):
    image, parts = face
    path = save_examples(tmp_path / "grid.png", image, parts, seed=0)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 500 and im.height > 300
