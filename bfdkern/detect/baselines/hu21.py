"""Hu21: corneal specular highlight consistency, a training-free detector.

Both eyes of a real photo see the same light sources, so their corneal highlights sit in the same place of
each eye; generated faces often get them in different places or shapes. Per image: locate the face's eye band
(:mod:`bfdkern.data.faces`), split it into the two eyes, resize both crops to one size, threshold each crop's
brightest pixels (the highlights) and score the intersection over union of the two masks (0 ... 1; high =
consistent = real). As in the paper, the highlights are compared in each cornea's own frame: the iris is
located in each eye crop as the darkest disk against a brighter ring around it (a search over positions and
radii), and each mask is taken inside that disk after resampling it to one size, so that a highlight at the
same place on both corneas overlaps even when the irises sit at different places in their eye boxes. When an
iris is not found (closed eyes, a poor eye box, low contrast), both whole eye crops are compared instead.
Simpler than the paper: the iris is a disk found by contrast (no edge-based circle fit), and no landmark model
places the eyes (the face locator's eye band, split in half).

Convention: the positive class of the score is **real**, as for the one-class detector.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

from bfdkern.data.decode import decode_image
from bfdkern.data.faces import HaarFaceLocator, TemplateLocator

EYE_SIZE = 32
"""Side, in pixels, both corneas (or both eye crops) are resampled to before their highlights are compared."""
SEARCH_HEIGHT = 48
"""Height, in pixels, each eye crop is scaled to (aspect kept) for the iris search."""
IRIS_RADII = (0.08, 0.22)
"""Iris radii searched, as fractions of the eye crop's height (8 radii between them)."""
RING_SCALE = 1.6
"""The ring around a candidate iris reaches this many radii from its centre."""


def highlight_mask(
    eye: np.ndarray, min_level: float = 0.35, sigmas: float = 2.0, region: np.ndarray | None = None
) -> np.ndarray:
    """Gray eye crop [H, W] (uint8 or float in [0, 1]) -> bool mask [H, W] of specular highlights: pixels at
    least ``min_level`` bright and ``sigmas`` standard deviations above the mean, the statistics and the
    mask restricted to ``region`` (bool [H, W], e.g. the cornea) when given."""
    x = np.asarray(eye, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"eye crop: expected a non-empty [H, W] gray image, got shape {x.shape}")
    if np.asarray(eye).dtype == np.uint8:
        x = x / 255.0
    inside = np.ones(x.shape, bool) if region is None else np.asarray(region, bool)
    if inside.shape != x.shape or not inside.any():
        raise ValueError(f"highlight region: expected a non-empty bool mask of shape {x.shape}")
    values = x[inside]
    return inside & (x >= min_level) & (x >= values.mean() + sigmas * values.std())


def _disk(radius: float) -> np.ndarray:
    k = 2 * int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[:k, :k] - k // 2
    return (xx**2 + yy**2 <= radius**2).astype(np.float32)


def iris_circle(eye: np.ndarray) -> tuple[float, float, float, float]:
    """Gray eye crop [H, W] uint8 -> (cx, cy, r, contrast): the disk, inside the crop, whose mean is darkest
    against the ring around it (out to ``RING_SCALE`` r), and that contrast in gray levels (0 ... 255), on
    the crop clipped at its median (highlights and sclera count as the surround's level). Radii span
    ``IRIS_RADII`` of the crop's height."""
    x = np.asarray(eye, dtype=np.float32)
    x = np.minimum(x, np.median(x))  # a bright highlight inside the iris must not hide its darkness
    h, w = x.shape
    best = (-np.inf, 0.0, 0.0, 0.0)
    for r in np.linspace(IRIS_RADII[0] * h, IRIS_RADII[1] * h, 8):
        disk, outer = _disk(r), _disk(RING_SCALE * r)
        ring = outer.copy()
        pad = (outer.shape[0] - disk.shape[0]) // 2
        ring[pad : pad + disk.shape[0], pad : pad + disk.shape[1]] -= disk
        inner_mean = cv2.filter2D(x, -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT)
        ring_mean = cv2.filter2D(x, -1, ring / ring.sum(), borderType=cv2.BORDER_REFLECT)
        contrast = ring_mean - inner_mean
        m = int(np.ceil(r))
        if 2 * m >= min(h, w):
            continue
        valid = contrast[m : h - m, m : w - m]  # the whole disk inside the crop
        iy, ix = np.unravel_index(int(np.argmax(valid)), valid.shape)
        if valid[iy, ix] > best[0]:
            best = (float(valid[iy, ix]), float(ix + m), float(iy + m), float(r))
    contrast, cx, cy, r = best
    return cx, cy, r, contrast


def cornea_crop(eye: np.ndarray, circle, size: int = EYE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The square around ``circle`` = (cx, cy, r) resampled to [size, size], and the bool disk inside it."""
    cx, cy, r = (float(v) for v in circle[:3])
    scale = 2.0 * r / size  # output pixel -> input pixels
    to_input = np.float32([[scale, 0, cx - r + 0.5 * scale - 0.5], [0, scale, cy - r + 0.5 * scale - 0.5]])
    crop = cv2.warpAffine(
        np.ascontiguousarray(eye),
        to_input,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return crop, xx**2 + yy**2 <= (size / 2) ** 2


def highlight_iou(left: np.ndarray, right: np.ndarray) -> float:
    """Intersection over union of two equal-shape highlight masks; 0 when neither eye has a highlight
    (no evidence of consistency)."""
    if left.shape != right.shape:
        raise ValueError(f"highlight masks differ in shape: {left.shape} vs {right.shape}")
    union = np.logical_or(left, right).sum()
    return float(np.logical_and(left, right).sum() / union) if union else 0.0


def eye_crops(image: np.ndarray, eyes_box, height: int = SEARCH_HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H, W, 3] and the box (x0, y0, x1, y1) of both eyes -> the two gray eye crops (the left and
    right halves of the box), each scaled to ``height`` rows with its aspect kept (so that an iris stays a
    disk), uint8."""
    x0, y0, x1, y1 = (int(v) for v in eyes_box)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 1:
        raise ValueError(f"eye box {tuple(eyes_box)} is empty inside a {w}x{h} image")
    gray = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1, :3]), cv2.COLOR_RGB2GRAY)
    mid = gray.shape[1] // 2
    crops = []
    for half in (gray[:, :mid], gray[:, mid:]):
        width = max(8, round(half.shape[1] * height / half.shape[0]))
        shrink = width < half.shape[1]
        crops.append(cv2.resize(half, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
    return crops[0], crops[1]


class CornealHighlightDetector:
    """Hu21 as a detector with the project's scoring interface (training-free; nothing to fit).

    Args:
        locator: a :class:`~bfdkern.data.faces.FaceLocator` (default: OpenCV Haar cascades, falling back to the
            aligned-crop template when no face is found).
        threshold: IoU below which an image is called fake.
        min_level, sigmas: :func:`highlight_mask` parameters.
        min_contrast: gray levels (0 ... 255) by which an iris must be darker than the ring around it to be
            taken as found (:func:`iris_circle`); below it on either eye, the whole eye crops are compared.
    """

    kind = "hu21"
    positive_class = "real"
    score_name = "highlight IoU"

    def __init__(
        self,
        locator=None,
        threshold: float = 0.2,
        min_level: float = 0.35,
        sigmas: float = 2.0,
        min_contrast: float = 12.0,
    ):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.locator = locator
        self.threshold = float(threshold)
        self.params = {
            "threshold": self.threshold,
            "min_level": float(min_level),
            "sigmas": float(sigmas),
            "min_contrast": float(min_contrast),
        }

    def _eyes_box(self, image: np.ndarray, source: str):
        if self.locator is None:
            self.locator = HaarFaceLocator()
        faces = self.locator.locate(image, source)
        return (faces or TemplateLocator().locate(image, source))[0].eyes

    def highlight_masks(self, image: np.ndarray, source: str = "<image>") -> tuple[np.ndarray, np.ndarray, bool]:
        """RGB uint8 [H, W, 3] -> the two eyes' highlight masks [EYE_SIZE, EYE_SIZE] and whether they are
        cornea masks (both irises found) rather than whole-eye ones."""
        p = self.params
        eyes = eye_crops(image, self._eyes_box(image, source))
        circles = [iris_circle(eye) for eye in eyes]
        if all(c[3] >= p["min_contrast"] for c in circles):
            corneas = [cornea_crop(eye, c) for eye, c in zip(eyes, circles)]
            masks = [highlight_mask(crop, p["min_level"], p["sigmas"], region=disk) for crop, disk in corneas]
            return masks[0], masks[1], True
        whole = [cv2.resize(eye, (EYE_SIZE, EYE_SIZE), interpolation=cv2.INTER_AREA) for eye in eyes]
        return (
            highlight_mask(whole[0], p["min_level"], p["sigmas"]),
            highlight_mask(whole[1], p["min_level"], p["sigmas"]),
            False,
        )

    def score_image(self, image: np.ndarray, source: str = "<image>") -> float:
        """RGB uint8 [H, W, 3] -> highlight IoU of its two eyes (0 ... 1)."""
        left, right, _ = self.highlight_masks(image, source)
        return highlight_iou(left, right)

    def score_files(self, paths: Sequence[str | os.PathLike], progress: bool = True) -> np.ndarray:
        """Image files -> [N] highlight IoUs (float64); an unreadable file is an error naming it."""
        scores = []
        for path in tqdm(list(paths), desc="hu21", unit="img", disable=not progress, leave=False):
            scores.append(self.score_image(np.asarray(decode_image(path)), str(path)))
        return np.asarray(scores, dtype=np.float64)

    def decide(self, scores) -> np.ndarray:
        """Scores [N] -> [N] int: 1 = fake (IoU below the threshold), 0 = real."""
        return (np.asarray(scores) < self.threshold).astype(np.int64)
