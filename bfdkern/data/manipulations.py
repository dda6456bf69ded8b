"""Face manipulations made on the fly from real faces: the positives of the outer task l_1 (manipulated or
not) and of the region task (mouth, eye).

Four manipulations, as in BLADES:

* ``mouth_flip_both``: the mouth box flipped over both axes, blended back through a soft mask;
* ``mouth_flip_h``: the mouth box flipped horizontally, blended back;
* ``eye_flip_h``: the eye band (both eyes) flipped horizontally, blended back;
* ``warp``: a piecewise-affine warp of the whole face box (a grid of control points, the inner ones moved by
  a normal displacement of ``scale`` x the face size, scale drawn from [0.04, 0.05]); it counts as both regions.

The soft mask is a rectangle blurred, eroded and re-blurred, sized so that it is exactly zero outside the
box; the blend ratio is drawn from {0.75, 1, 1, 1}. Every output image, manipulated or not, then goes
through one bilinear remap with a random sub-pixel shift (the warp is composed into that same remap), so
that resampling is not a shortcut to tell the two apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from bfdkern.data.faces import FaceParts
from bfdkern.data.simulator import example_face
from bfdkern.data.transforms import Box
from bfdkern.figures import pyplot

MANIPULATIONS = ("mouth_flip_both", "mouth_flip_h", "eye_flip_h", "warp")
KINDS = ("original", *MANIPULATIONS)
KIND_PROBABILITIES = (0.5, 0.125, 0.125, 0.125, 0.125)
"""Originals half the time, each manipulation 1/8."""
REGIONS = {
    "original": (),
    "mouth_flip_both": ("mouth",),
    "mouth_flip_h": ("mouth",),
    "eye_flip_h": ("eye",),
    "warp": ("mouth", "eye"),
}
"""The regions each kind manipulates (a global warp counts as both)."""
BLEND_RATIOS = (0.75, 1.0, 1.0, 1.0)
WARP_SCALE = (0.04, 0.05)
WARP_GRID = 4
"""Cells per side of the warp's control grid over the face box."""


def choose_kind(rng: np.random.Generator, probabilities=KIND_PROBABILITIES) -> str:
    """One of :data:`KINDS` drawn with ``probabilities`` (normalised to sum 1)."""
    p = np.asarray(probabilities, dtype=np.float64)
    return KINDS[int(rng.choice(len(KINDS), p=p / p.sum()))]


def soft_mask(shape: tuple[int, int], box: Box, rng: np.random.Generator | None = None) -> np.ndarray:
    """float32 ``[H, W]`` mask in [0, 1]: the rectangle ``box`` blurred, eroded and blurred again. The
    erosion removes what the two blurs add, so the mask is exactly 0 outside ``box`` and 1 in its core.
    The blur radius is a random 6-12% of the box's shorter side (10% without ``rng``), small enough that
    the core is reached; boxes too small for a radius of one pixel get the hard rectangle."""
    h, w = shape
    x0, y0, x1, y1 = _clip(box, w, h)
    mask = np.zeros((h, w), np.float32)
    mask[y0:y1, x0:x1] = 1.0
    side = min(x1 - x0, y1 - y0)
    frac = 0.10 if rng is None else rng.uniform(0.06, 0.12)
    r = round(frac * side)
    if r == 0:  # a box of a few pixels: no room for a soft edge
        return mask
    kernel = (2 * r + 1, 2 * r + 1)
    # BORDER_CONSTANT: a box touching the image edge must not gain mass from a reflected copy.
    mask = cv2.GaussianBlur(mask, kernel, r / 2, borderType=cv2.BORDER_CONSTANT)
    mask = cv2.erode(mask, np.ones((4 * r + 1, 4 * r + 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    mask = cv2.GaussianBlur(mask, kernel, r / 2, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1e-6] = 0.0
    return mask


def flip_region(image: np.ndarray, box: Box, axes: str, mask: np.ndarray, blend: float) -> np.ndarray:
    """``image`` (uint8 [H, W, 3]) with the content of ``box`` flipped (``axes`` ``"h"`` or ``"both"``) and
    blended back: ``out = image (1 - blend mask) + flipped (blend mask)``. float32 [H, W, 3]."""
    if axes not in ("h", "both"):
        raise ValueError(f"axes must be 'h' or 'both', got {axes!r}")
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _clip(box, w, h)
    flipped = image.astype(np.float32)
    region = flipped[y0:y1, x0:x1]
    flipped[y0:y1, x0:x1] = region[::-1, ::-1] if axes == "both" else region[:, ::-1]
    a = (blend * mask)[:, :, None]
    return image.astype(np.float32) * (1.0 - a) + flipped * a


def draw_warp(rng: np.random.Generator, box: Box, scale: float, grid: int = WARP_GRID) -> np.ndarray:
    """Displacements [2, grid+1, grid+1] (x, y; pixels) of a control lattice over ``box``: the inner points
    move by N(0, (scale * longer box side)^2), the border points stay."""
    side = max(box[2] - box[0], box[3] - box[1])
    disp = rng.normal(0.0, scale * side, size=(2, grid + 1, grid + 1)).astype(np.float32)
    disp[:, 0, :] = disp[:, -1, :] = disp[:, :, 0] = disp[:, :, -1] = 0.0
    return disp


def warp_field(shape: tuple[int, int], box: Box, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The piecewise-affine displacement field of lattice displacements ``disp`` [2, G+1, G+1] over ``box``:
    each lattice cell is split along its main diagonal into two triangles, and the displacement is affine
    inside each (zero on the box border and outside). Pixel (x, y) sits at its centre (x + 0.5, y + 0.5).
    Returns (dx, dy) float32 [H, W], the source offset of each output pixel."""
    h, w = shape
    x0, y0, x1, y1 = _clip(box, w, h)
    grid = disp.shape[1] - 1
    bw, bh = x1 - x0, y1 - y0
    dx = np.zeros((h, w), np.float32)
    dy = np.zeros((h, w), np.float32)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # Lattice coordinates of each pixel: cell (i, j) and the position (u, v) in [0, 1) inside it.
    gx = (xs + 0.5 - x0) / bw * grid
    gy = (ys + 0.5 - y0) / bh * grid
    j = np.clip(gx.astype(np.int64), 0, grid - 1)
    i = np.clip(gy.astype(np.int64), 0, grid - 1)
    u, v = gx - j, gy - i
    upper = u >= v  # the triangle (0,0)-(1,0)-(1,1) of the cell, else (0,0)-(0,1)-(1,1)
    for c, out in ((0, dx), (1, dy)):
        d00, d01 = disp[c, i, j], disp[c, i, j + 1]
        d10, d11 = disp[c, i + 1, j], disp[c, i + 1, j + 1]
        out[y0:y1, x0:x1] = np.where(
            upper, d00 + u * (d01 - d00) + v * (d11 - d01), d00 + v * (d10 - d00) + u * (d11 - d10)
        )
    return dx, dy


def resample(
    image: np.ndarray, shift: tuple[float, float], dx: np.ndarray | None = None, dy: np.ndarray | None = None
) -> np.ndarray:
    """One bilinear remap: output pixel (x, y) reads ``image`` at (x + shift_x + dx, y + shift_y + dy).
    ``image`` uint8 or float32 [H, W, 3]; returns uint8 [H, W, 3]."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = xs + np.float32(shift[0]) + (dx if dx is not None else 0.0)
    map_y = ys + np.float32(shift[1]) + (dy if dy is not None else 0.0)
    out = cv2.remap(np.asarray(image, np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def manipulate(
    image: np.ndarray, parts: FaceParts, rng: np.random.Generator, kind: str | None = None
) -> tuple[np.ndarray, dict]:
    """Apply one manipulation (or none) to a face image and resample it.

    Args:
        image: uint8 [H, W, 3] RGB.
        parts: the face's boxes in this image's pixels.
        rng: the randomness (the sub-pixel shift is drawn first, then the kind, then its parameters).
        kind: one of :data:`KINDS`; drawn with :data:`KIND_PROBABILITIES` when None.

    Returns:
        (uint8 [H, W, 3], labels) with labels ``kind``, ``manipulated`` (0/1), ``mouth`` (0/1), ``eye`` (0/1),
        ``blend`` (the blend ratio, 0 for originals and warps), ``box`` (the manipulated box or None) and
        ``mask`` (float32 [H, W]: where the content was changed, before the resampling).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    shift = (float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0)))
    if kind is None:
        kind = choose_kind(rng)
    if kind not in KINDS:
        raise ValueError(f"unknown manipulation {kind!r}, expected one of {list(KINDS)}")
    labels = {
        "kind": kind,
        "manipulated": int(kind != "original"),
        "mouth": int("mouth" in REGIONS[kind]),
        "eye": int("eye" in REGIONS[kind]),
        "blend": 0.0,
        "box": None,
        "mask": np.zeros((h, w), np.float32),
    }
    if kind == "original":
        return resample(image, shift), labels
    if kind == "warp":
        box = _checked(parts.face, "face", w, h)
        dx, dy = warp_field((h, w), box, draw_warp(rng, box, float(rng.uniform(*WARP_SCALE))))
        labels.update(box=box, mask=((dx != 0) | (dy != 0)).astype(np.float32))
        return resample(image, shift, dx, dy), labels
    name = "eyes" if kind == "eye_flip_h" else "mouth"
    box = _checked(getattr(parts, name), name, w, h)
    blend = float(BLEND_RATIOS[int(rng.integers(len(BLEND_RATIOS)))])
    mask = soft_mask((h, w), box, rng)
    out = flip_region(image, box, "both" if kind == "mouth_flip_both" else "h", mask, blend)
    labels.update(box=box, blend=blend, mask=mask * blend)
    return resample(out, shift), labels


def save_examples(
    path: str | os.PathLike, image: np.ndarray, parts: FaceParts, seed: int = 0, draws: int = 2, dpi: int = 100
) -> Path:
    """A PNG grid for the docs: one column per kind (original first), ``draws`` rows of examples, and a row
    with the change against the resampled original (amplified), titled with the labels."""
    plt = pyplot()
    path = Path(path)
    fig, axes = plt.subplots(draws + 1, len(KINDS), figsize=(2.2 * len(KINDS), 2.3 * (draws + 1)), squeeze=False)
    for col, kind in enumerate(KINDS):
        for row in range(draws):
            out, labels = manipulate(image, parts, np.random.default_rng([seed, row, col]), kind=kind)
            ax = axes[row, col]
            ax.imshow(out)
            ax.set_axis_off()
            if row == 0:
                regions = ", ".join(r for r in ("mouth", "eye") if labels[r]) or "none"
                ax.set_title(f"{kind}\nmanipulated={labels['manipulated']} region={regions}", fontsize=8)
        # Same seed, kind "original": the same sub-pixel shift, so the difference is the manipulation alone.
        out, _ = manipulate(image, parts, np.random.default_rng([seed, 0, col]), kind=kind)
        ref, _ = manipulate(image, parts, np.random.default_rng([seed, 0, col]), kind="original")
        diff = np.abs(out.astype(np.int16) - ref.astype(np.int16)).max(axis=2)
        axes[draws, col].imshow(diff, cmap="magma", vmin=0, vmax=max(1, int(diff.max())))
        axes[draws, col].set_axis_off()
        axes[draws, col].set_title("|change|", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _clip(box: Box, w: int, h: int) -> Box:
    x0, y0, x1, y1 = (int(v) for v in box)
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _checked(box: Box, name: str, w: int, h: int) -> Box:
    clipped = _clip(box, w, h)
    if clipped[2] - clipped[0] < 2 or clipped[3] - clipped[1] < 2:
        raise ValueError(f"{name} box {tuple(box)} has less than 2x2 pixels inside the {w}x{h} image")
    return clipped


def docs_figure(path: str | os.PathLike = "docs/manipulations.png", size: int = 128, seed: int = 5) -> Path:
    """The docs' example grid, made from a simulated camera photo (never from real data)."""
    face, parts = example_face(size=size, seed=seed)
    return save_examples(path, face, parts, seed=0, draws=1, dpi=80)
