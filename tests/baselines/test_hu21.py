"""Hu21 (corneal highlight consistency): consistent highlights score high, moved ones low, on drawn eyes."""

import numpy as np
import pytest
from PIL import Image

from bfdkern.data.faces import TemplateLocator
from bfdkern.detect import evaluate_scores, list_images
from bfdkern.detect.baselines import CornealHighlightDetector, highlight_iou, highlight_mask

SIZE = 96


def _face(left_spot, right_spot, seed=0):
    """A gray face with two dark irises in the template's eye band and a white highlight in each, at
    ``(dx, dy)`` pixels from the iris centre."""
    rng = np.random.default_rng(seed)
    image = np.full((SIZE, SIZE, 3), 150, np.uint8) + rng.integers(0, 10, (SIZE, SIZE, 3), dtype=np.uint8)
    x0, y0, x1, y1 = TemplateLocator().locate(image)[0].eyes
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy = (y0 + y1) // 2
    for cx, (dx, dy) in ((x0 + (x1 - x0) // 4, left_spot), (x0 + 3 * (x1 - x0) // 4, right_spot)):
        image[(xx - cx) ** 2 + (yy - cy) ** 2 <= 16] = 40
        image[(xx - cx - dx) ** 2 + (yy - cy - dy) ** 2 <= 2] = 250
    return image


def test_consistent_highlights_score_higher_than_moved_ones():
    det = CornealHighlightDetector(locator=TemplateLocator())
    same = [det.score_image(_face((1, -1), (1, -1), seed)) for seed in range(4)]
    moved = [det.score_image(_face((1, -1), (-3, 2), seed)) for seed in range(4)]
    assert min(same) > 0.5 and max(moved) < 0.2
    result = evaluate_scores(det, np.array(same), {"moved": np.array(moved)})
    assert result["rows"][0]["auc"] == 1.0 and result["rows"][0]["accuracy"] == 1.0


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
