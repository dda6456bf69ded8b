"""Hu21: corneal specular highlight consistency, a training-free detector.

Both eyes of a real photo see the same light sources, so their corneal highlights sit in the same place of
each eye; generated faces often get them in different places or shapes. Per image: locate the face's eye band
(:mod:`bfdkern.data.faces`), split it into the two eyes, resize both crops to one size, threshold each crop's
brightest pixels (the highlights) and score the intersection over union of the two masks (0 ... 1; high =
consistent = real). Simplified from the paper: no iris segmentation, the eye boxes stand in for the corneas.

Convention: the positive class of the score is **real**, as for the one-class detector.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

EYE_SIZE = 32
"""Side, in pixels, both eye crops are resized to before their highlights are compared."""


def highlight_mask(eye: np.ndarray, min_level: float = 0.75, sigmas: float = 2.0) -> np.ndarray:
    """Gray eye crop [H, W] (uint8 or float in [0, 1]) -> bool mask [H, W] of specular highlights: pixels at
    least ``min_level`` bright and ``sigmas`` standard deviations above the crop's mean."""
    x = np.asarray(eye, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"eye crop: expected a non-empty [H, W] gray image, got shape {x.shape}")
    if np.asarray(eye).dtype == np.uint8:
        x = x / 255.0
    return (x >= min_level) & (x >= x.mean() + sigmas * x.std())


def highlight_iou(left: np.ndarray, right: np.ndarray) -> float:
    """Intersection over union of two equal-shape highlight masks; 0 when neither eye has a highlight
    (no evidence of consistency)."""
    if left.shape != right.shape:
        raise ValueError(f"highlight masks differ in shape: {left.shape} vs {right.shape}")
    union = np.logical_or(left, right).sum()
    return float(np.logical_and(left, right).sum() / union) if union else 0.0


def eye_crops(image: np.ndarray, eyes_box, size: int = EYE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H, W, 3] and the box (x0, y0, x1, y1) of both eyes -> the two gray eye crops, each
    [size, size] uint8 (the left and right halves of the box)."""
    import cv2

    x0, y0, x1, y1 = (int(v) for v in eyes_box)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 1:
        raise ValueError(f"eye box {tuple(eyes_box)} is empty inside a {w}x{h} image")
    gray = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1, :3]), cv2.COLOR_RGB2GRAY)
    mid = gray.shape[1] // 2
    return tuple(
        cv2.resize(half, (size, size), interpolation=cv2.INTER_AREA) for half in (gray[:, :mid], gray[:, mid:])
    )


class CornealHighlightDetector:
    """Hu21 as a detector with the project's scoring interface (training-free; nothing to fit).

    Args:
        locator: a :class:`~bfdkern.data.faces.FaceLocator` (default: OpenCV Haar cascades, falling back to the
            aligned-crop template when no face is found).
        threshold: IoU below which an image is called fake.
        min_level, sigmas: :func:`highlight_mask` parameters.
    """

    kind = "hu21"
    positive_class = "real"
    score_name = "highlight IoU"

    def __init__(self, locator=None, threshold: float = 0.2, min_level: float = 0.75, sigmas: float = 2.0):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.locator = locator
        self.threshold = float(threshold)
        self.params = {"threshold": self.threshold, "min_level": float(min_level), "sigmas": float(sigmas)}

    def _eyes_box(self, image: np.ndarray, source: str):
        from bfdkern.data.faces import HaarFaceLocator, TemplateLocator

        if self.locator is None:
            self.locator = HaarFaceLocator()
        faces = self.locator.locate(image, source)
        return (faces or TemplateLocator().locate(image, source))[0].eyes

    def score_image(self, image: np.ndarray, source: str = "<image>") -> float:
        """RGB uint8 [H, W, 3] -> highlight IoU of its two eyes (0 ... 1)."""
        left, right = eye_crops(image, self._eyes_box(image, source))
        p = self.params
        return highlight_iou(
            highlight_mask(left, p["min_level"], p["sigmas"]), highlight_mask(right, p["min_level"], p["sigmas"])
        )

    def score_files(self, paths: Sequence[str | os.PathLike], progress: bool = True) -> np.ndarray:
        """Image files -> [N] highlight IoUs (float64); an unreadable file is an error naming it."""
        from tqdm.auto import tqdm

        from bfdkern.detect.preprocess import decode_rgb, read_bytes

        scores = []
        for path in tqdm(list(paths), desc="hu21", unit="img", disable=not progress, leave=False):
            image = np.asarray(decode_rgb(read_bytes(path), path))
            scores.append(self.score_image(image, str(path)))
        return np.asarray(scores, dtype=np.float64)

    def decide(self, scores) -> np.ndarray:
        """Scores [N] -> [N] int: 1 = fake (IoU below the threshold), 0 = real."""
        return (np.asarray(scores) < self.threshold).astype(np.int64)
