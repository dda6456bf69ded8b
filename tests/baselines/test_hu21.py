"""Hu21 (corneal highlight consistency): consistent highlights score high, moved ones low, on drawn eyes;
the irises are found and the highlights compared in each cornea's frame; on real photos (when the shared
data is present) a face's own two eyes agree more often than eyes of two different photos."""

import numpy as np
import pytest
from PIL import Image

from bfdkern.data.decode import decode_image
from bfdkern.data.faces import HaarFaceLocator, TemplateLocator
from bfdkern.detect import evaluate_scores, list_images
from bfdkern.detect.baselines import CornealHighlightDetector, highlight_iou, highlight_mask
from bfdkern.detect.baselines.hu21 import eye_crops, iris_circle
from bfdkern.detect.metrics import roc_auc
from tests.helpers import shared_data_dir

SIZE = 96


def _face(left_spot, right_spot, seed=0, shift=((0, 0), (0, 0))):
    """A gray face with two dark irises in the template's eye band and a white highlight in each, at
    ``(dx, dy)`` pixels from the iris centre; ``shift`` moves each iris (with its highlight) in its eye."""
    rng = np.random.default_rng(seed)
    image = np.full((SIZE, SIZE, 3), 150, np.uint8) + rng.integers(0, 10, (SIZE, SIZE, 3), dtype=np.uint8)
    x0, y0, x1, y1 = TemplateLocator().locate(image)[0].eyes
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy = (y0 + y1) // 2
    centres = (x0 + (x1 - x0) // 4, x0 + 3 * (x1 - x0) // 4)
    for cx, (dx, dy), (sx, sy) in zip(centres, (left_spot, right_spot), shift):
        image[(xx - cx - sx) ** 2 + (yy - cy - sy) ** 2 <= 16] = 40
        image[(xx - cx - sx - dx) ** 2 + (yy - cy - sy - dy) ** 2 <= 2] = 250
    return image


def test_consistent_highlights_score_higher_than_moved_ones():
    det = CornealHighlightDetector(locator=TemplateLocator())
    same = [det.score_image(_face((1, -1), (1, -1), seed)) for seed in range(4)]
    moved = [det.score_image(_face((1, -1), (-3, 2), seed)) for seed in range(4)]
    assert min(same) > 0.5 and max(moved) < 0.2
    result = evaluate_scores(det, np.array(same), {"moved": np.array(moved)})
    assert result["rows"][0]["auc"] == 1.0 and result["rows"][0]["acc"] == 1.0


def test_irises_are_found_and_highlights_compared_in_the_cornea_frame():
    """Irises at different places in their eye boxes, highlights at the same place on each cornea: the
    cornea frame sees them agree; the whole eye boxes would not."""
    det = CornealHighlightDetector(locator=TemplateLocator())
    shift = ((-4, 1), (3, -1))
    image = _face((1, -1), (1, -1), shift=shift)
    box = TemplateLocator().locate(image)[0].eyes
    eyes = eye_crops(image, box)
    scale = eyes[0].shape[0] / (box[3] - box[1])  # eye crop pixels per image pixel; the irises' radius is 4
    for eye in eyes:
        cx, cy, r, contrast = iris_circle(eye)
        assert contrast > 50 and 3 * scale <= r <= 5 * scale
    left, right, cornea = det.highlight_masks(image)
    assert cornea and left.any() and highlight_iou(left, right) > 0.5
    whole = CornealHighlightDetector(locator=TemplateLocator(), min_contrast=float("inf"))
    assert not whole.highlight_masks(image)[2]
    assert whole.score_image(image) < 0.2
    assert det.score_image(_face((1, -1), (-3, 2), shift=shift)) < 0.2


def test_masks_and_iou():
    eye = np.zeros((8, 8), np.uint8)
    eye[2:4, 2:4] = 255
    mask = highlight_mask(eye)
    assert mask.sum() == 4 and highlight_iou(mask, mask) == 1.0
    assert highlight_iou(mask, np.roll(mask, 1, axis=1)) == pytest.approx(2 / 6)
    assert highlight_iou(np.zeros_like(mask), np.zeros_like(mask)) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        highlight_iou(mask, mask[:4])


def test_scores_files(eval_sets, tmp_path):
    paths = list_images(eval_sets / "real")[:4]
    scores = CornealHighlightDetector().score_files(paths, progress=False)
    assert scores.shape == (4,) and np.all((scores >= 0) & (scores <= 1))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"no image")
    with pytest.raises(Exception, match="bad.jpg"):
        CornealHighlightDetector().score_files([bad], progress=False)
    Image.fromarray(_face((0, 0), (0, 0))).save(tmp_path / "face.png")
    assert CornealHighlightDetector(locator=TemplateLocator()).score_files([tmp_path / "face.png"])[0] > 0.5


def test_real_faces_own_eyes_agree_more_than_two_photos_eyes():
    """On real photos (../shared/data/faces), pairing a face's own two eyes against the left eye of one photo
    and the right eye of another (a stand-in for inconsistent highlights): the cornea frame separates them
    better than the whole eye boxes do (measured: AUC 0.55 against 0.48)."""
    data = shared_data_dir()
    if data is None or not (data / "faces" / "faces_with_exif").is_dir():
        pytest.skip("needs ../shared/data/faces")
    paths = list_images(data / "faces" / "faces_with_exif")
    images = [np.asarray(decode_image(p)) for p in paths]
    aucs = {}
    for name, min_contrast in (("cornea", 12.0), ("whole", float("inf"))):
        det = CornealHighlightDetector(locator=HaarFaceLocator(), min_contrast=min_contrast)
        masks = [det.highlight_masks(image, str(p)) for image, p in zip(images, paths)]
        if name == "cornea":
            assert sum(m[2] for m in masks) >= 0.8 * len(masks)  # both irises found in most photos
        own = [highlight_iou(left, right) for left, right, _ in masks]
        swapped = [highlight_iou(masks[i][0], masks[i - 1][1]) for i in range(len(masks))]
        aucs[name] = roc_auc(np.r_[np.ones(len(own)), np.zeros(len(swapped))], np.r_[own, swapped])
    assert aucs["cornea"] > aucs["whole"] + 0.03 and aucs["cornea"] > 0.5, aucs
