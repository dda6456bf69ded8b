"""A camera simulator: face-like scenes photographed by a simple physical camera, written as real JPEGs
with EXIF, so the whole method can run (and be tested) with no data.

Every EXIF value leaves a physical trace in the pixels:

=================  ========================================================================================
tag                trace
=================  ========================================================================================
ISO                sensor noise: shot noise (variance ~ signal x ISO) and read noise (~ ISO), on the raw mosaic,
                   over a floor of noise that every photo has
exposure time      brightness (exposure x (t / (1/125 s))^0.3) and camera-shake motion blur (length ~ t)
aperture           depth of field: the background is blurred with sigma ~ 1 / f-number, the face stays sharp
focal length       field of view: the background (a tiled wall at a fixed distance) is magnified by f / 24 mm,
                   while the photographer keeps the face framed the same
white balance      auto removes the illuminant's colour cast; manual leaves it in
make               a colour matrix (saturation, hue twist), sharpening, and the JPEG quality and subsampling
metering mode      which region sets the exposure (whole frame, centre-weighted, spot on the face, pattern)
exposure program   constrains the settings (portrait: wide apertures; landscape: narrow; shutter priority:
                   fast shutter); exposure mode is manual exactly when the program is manual
=================  ========================================================================================

The pipeline: scene radiance (linear RGB, an illuminant cast) -> optics (background defocus, motion blur)
-> exposure -> RGGB Bayer mosaic -> shot + read noise -> 12-bit quantisation -> bilinear demosaicing ->
white balance -> make colour matrix -> sRGB tone curve -> sharpening -> 8 bits -> JPEG (make quality) ->
EXIF (pyexiv2). Faces are drawn at the positions of :data:`bfdkern.data.faces.ALIGNED_TEMPLATE` (small
jitter), so :class:`~bfdkern.data.faces.TemplateLocator` finds their eyes and mouth.

:func:`simulate_uncamera` renders the same kind of scenes but skips the camera: no sensor noise, no mosaic,
no colour matrix of a make, no camera JPEG (PNG files without EXIF); half of them are re-synthesised the
way a generator upsamples. They stand in for generated faces.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from bfdkern.data.faces import ALIGNED_TEMPLATE, FaceParts, sub_box


@dataclass(frozen=True)
class CameraMake:
    """A simulated camera maker: its EXIF strings and the pixel traces it leaves."""

    name: str  # canonical make class of the task spec
    exif_make: str  # as the camera writes it
    model: str
    saturation: float  # colour matrix: chroma gain
    hue_deg: float  # colour matrix: rotation of the chroma plane
    sharpen: float  # unsharp-mask amount
    quality: int  # JPEG quality
    subsampling: int  # JPEG chroma subsampling (Pillow: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0)


MAKES = (
    CameraMake("Canon", "Canon", "Canon EOS 5D Mark IV", 1.10, 5.0, 0.2, 96, 1),
    CameraMake("Nikon", "NIKON CORPORATION", "NIKON D750", 1.00, -6.0, 0.3, 90, 2),
    CameraMake("Sony", "SONY", "ILCE-7M3", 1.25, 0.0, 0.5, 85, 2),
    CameraMake("Apple", "Apple", "iPhone 12", 1.40, 10.0, 0.9, 80, 2),
    CameraMake("Samsung", "samsung", "SM-G991B", 1.55, -10.0, 1.2, 72, 2),
)
ISO_VALUES = (100, 200, 400, 800, 1600, 3200, 6400)
APERTURES = ((18, 10), (28, 10), (4, 1), (56, 10), (8, 1), (11, 1), (16, 1))
"""f-numbers as EXIF rationals (n, d)."""
EXPOSURE_TIMES = ((1, 2000), (1, 1000), (1, 500), (1, 250), (1, 125), (1, 60), (1, 30), (1, 15))
"""Seconds as EXIF rationals (n, d)."""
FOCAL_LENGTHS = (24, 35, 50, 70, 85, 105, 135)
"""Millimetres (35 mm equivalent)."""
METERING_MODES = {1: 0.15, 2: 0.30, 3: 0.15, 5: 0.40}
"""EXIF MeteringMode code -> probability (average, centre-weighted, spot, pattern)."""
EXPOSURE_PROGRAMS = {1: 0.10, 2: 0.30, 3: 0.20, 4: 0.15, 7: 0.15, 8: 0.10}
"""EXIF ExposureProgram code -> probability (manual, normal, aperture priority, shutter priority, portrait,
landscape)."""

NOISE_FLOOR = 0.006
"""Sensor noise present at every ISO (dark current, fixed pattern), as a fraction of full scale."""

LABEL_FIELDS = (
    "file",
    "make",
    "model",
    "iso",
    "aperture",
    "exposure_time",
    "focal_length",
    "metering_mode",
    "exposure_mode",
    "white_balance",
    "exposure_program",
)
PART_FIELDS = tuple(f"{part}_{c}" for part in ("face", "eyes", "mouth") for c in ("x0", "y0", "x1", "y1"))
LABELS_FILE = "labels.csv"


# ---------------------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Scene:
    """A rendered scene in linear RGB: the in-focus subject over a background, at ``size x size``."""

    subject: np.ndarray  # float32 [H, W, 3]
    alpha: np.ndarray  # float32 [H, W], 1 on the subject
    background: np.ndarray  # float32 [H, W, 3]
    parts: FaceParts


def render_scene(rng: np.random.Generator, size: int, focal_mm: float = 50.0) -> Scene:
    """A face-like scene: a shaded ellipse face with hair, eyes, brows, nose and mouth at the template
    positions (jittered), lit from one side, in front of a tiled wall magnified by ``focal_mm / 24``.
    Rendered at twice the size and averaged down (anti-aliasing)."""
    s2 = 2 * size
    background = _background(rng, s2, focal_mm / 24.0)
    subject, alpha, parts = _face(rng, s2)
    down = lambda a: cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
    return Scene(down(subject), down(alpha), down(background), parts.transformed(0.5, 0.5))


def _background(rng: np.random.Generator, s: int, magnification: float) -> np.ndarray:
    """A wall of tiles with a fixed physical size, seen through a lens magnifying by ``magnification``."""
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
    u = (xs - s / 2 + rng.uniform(-s, s)) / (s * magnification)
    v = (ys - s / 2 + rng.uniform(-s, s)) / (s * magnification)
    theta = rng.uniform(-0.4, 0.4)
    ur, vr = u * np.cos(theta) - v * np.sin(theta), u * np.sin(theta) + v * np.cos(theta)
    period = rng.uniform(0.07, 0.12)
    rows = np.floor(vr / (period * 0.6))
    bricks = (np.floor(ur / period + 0.5 * (rows % 2)) + rows) % 2
    mortar = (np.abs(((vr / (period * 0.6)) % 1) - 0.5) > 0.42).astype(np.float32)
    c1, c2 = rng.uniform(0.05, 0.6, 3), rng.uniform(0.05, 0.6, 3)
    wall = np.where(bricks[..., None] > 0, c1, c2).astype(np.float32)
    wall = wall * (1 - 0.5 * mortar[..., None])
    light = 1.0 + rng.uniform(-0.3, 0.3) * (ys / s - 0.5) + rng.uniform(-0.3, 0.3) * (xs / s - 0.5)
    return (wall * light[..., None]).astype(np.float32)


EYES_DRAWN = (0.07, 0.15, 0.93, 0.85)
MOUTH_DRAWN = (0.11, 0.2, 0.89, 0.8)
"""Where the eyes and the mouth are drawn inside their template boxes (fractions)."""
SKIN_TONES = np.array(
    [
        [0.80, 0.57, 0.45],
        [0.62, 0.42, 0.30],
        [0.42, 0.26, 0.17],
        [0.25, 0.15, 0.10],
        [0.86, 0.68, 0.58],
        [0.70, 0.52, 0.38],
    ],
    np.float32,
)
IRIS_COLOURS = np.array([[0.25, 0.15, 0.07], [0.10, 0.25, 0.45], [0.20, 0.35, 0.15], [0.08, 0.05, 0.03]], np.float32)


def _face(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray, FaceParts]:
    whole = (0, 0, s, s)
    face_box = sub_box(whole, ALIGNED_TEMPLATE["face"])
    eyes_box = sub_box(whole, ALIGNED_TEMPLATE["eyes"])
    mouth_box = sub_box(whole, ALIGNED_TEMPLATE["mouth"])
    # The features are drawn inside the template boxes, which leave a margin of skin around them.
    eyes_drawn = sub_box(eyes_box, EYES_DRAWN)
    mouth_drawn = sub_box(mouth_box, MOUTH_DRAWN)
    jx, jy = rng.normal(0, 0.012 * s, 2)
    sc = rng.uniform(0.96, 1.03)
    cx, cy = (face_box[0] + face_box[2]) / 2 + jx, (face_box[1] + face_box[3]) / 2 + jy
    ax, ay = (face_box[2] - face_box[0]) / 2 * sc, (face_box[3] - face_box[1]) / 2 * sc
    yaw = rng.uniform(-1, 1) * 0.03 * s  # features slide sideways when the head turns
    subject = np.zeros((s, s, 3), np.float32)
    alpha = np.zeros((s, s), np.float32)

    def ellipse(img, centre, axes, colour, angle=0.0, start=0, end=360, thickness=-1):
        c = (round(centre[0] * 16), round(centre[1] * 16))
        a = (max(1, round(axes[0] * 16)), max(1, round(axes[1] * 16)))
        cv2.ellipse(img, c, a, angle, start, end, colour, thickness, cv2.LINE_8, 4)

    # Shoulders and neck, then hair behind the head, then the face.
    clothes = tuple(float(v) for v in rng.uniform(0.05, 0.7, 3))
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, 3)
    ellipse(subject, (cx, s * 1.12), (s * 0.48, s * 0.26), clothes)
    ellipse(alpha, (cx, s * 1.12), (s * 0.48, s * 0.26), 1.0)
    cv2.rectangle(
        subject, (round(cx - 0.45 * ax), round(cy)), (round(cx + 0.45 * ax), s), tuple(float(v) for v in skin * 0.8), -1
    )
    cv2.rectangle(alpha, (round(cx - 0.45 * ax), round(cy)), (round(cx + 0.45 * ax), s), 1.0, -1)
    hair = tuple(float(v) for v in rng.uniform(0.02, 0.35) * np.array([1.0, 0.8, 0.6]) * rng.uniform(0.7, 1.3, 3))
    ellipse(subject, (cx, cy - 0.12 * ay), (ax * 1.08, ay * 0.95), hair)
    ellipse(alpha, (cx, cy - 0.12 * ay), (ax * 1.08, ay * 0.95), 1.0)
    face_mask = np.zeros((s, s), np.float32)
    ellipse(face_mask, (cx, cy), (ax, ay), 1.0)
    hairline = cy - ay * rng.uniform(0.55, 0.75)
    face_mask[: max(0, int(hairline)), :] *= 0.0
    subject = subject * (1 - face_mask[..., None]) + skin[None, None, :] * face_mask[..., None]
    alpha = np.maximum(alpha, face_mask)
    # One light from the side: it shades the face and everything on it, and puts the catchlights in the
    # eyes and the highlight on the lips on its side (flipped regions break this consistency).
    side = float(rng.choice([-1, 1]))
    lx, ly = side * rng.uniform(0.35, 0.6), rng.uniform(-0.15, 0.15)

    # Eyes: white, iris with a gaze offset, pupil; brows above.
    ex0, ey0, ex1, ey1 = eyes_drawn
    eye_y = (ey0 + ey1) / 2 + jy
    eye_rx, eye_ry = (ex1 - ex0) * 0.14, (ey1 - ey0) * 0.30
    iris = tuple(float(v) for v in IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))])
    gaze = rng.uniform(-0.35, 0.35) * eye_rx
    brow = tuple(float(v) for v in np.asarray(hair) * 0.8)
    brow_tilt = rng.uniform(-8, 8)
    eye_xs = (ex0 + 0.25 * (ex1 - ex0) + jx + yaw, ex0 + 0.75 * (ex1 - ex0) + jx + yaw)
    for k, ex in enumerate(eye_xs):
        ellipse(subject, (ex, eye_y), (eye_rx, eye_ry), (0.85, 0.83, 0.8))
        ellipse(subject, (ex + gaze, eye_y), (eye_ry * 0.85, eye_ry * 0.85), iris)
        ellipse(subject, (ex + gaze, eye_y), (eye_ry * 0.4, eye_ry * 0.4), (0.01, 0.01, 0.01))
        ellipse(subject, (ex, eye_y), (eye_rx, eye_ry), tuple(float(v) for v in skin * 0.5), thickness=max(1, s // 100))
        ellipse(
            subject,
            (ex, eye_y - 1.9 * eye_ry),
            (eye_rx * 1.1, eye_ry * 0.9),
            brow,
            angle=brow_tilt * (1 if k == 0 else -1),
            start=200,
            end=340,
            thickness=max(2, s // 45),
        )
    # Nose: a shaded ridge away from the light and a nostril shadow.
    nose_x = cx + yaw * 1.2
    nose_dark = tuple(float(v) for v in skin * 0.6)
    cv2.line(
        subject,
        (round(nose_x - 0.04 * s * side), round(eye_y + 0.03 * s)),
        (round(nose_x - 0.03 * s * side), round(eye_y + 0.15 * s)),
        nose_dark,
        max(1, s // 60),
    )
    ellipse(subject, (nose_x, eye_y + 0.17 * s), (0.045 * s, 0.015 * s), nose_dark)
    # Mouth: upper lip darker than the lower one, a tilted curve between (smile or not), teeth sometimes.
    mx0, my0, mx1, my1 = mouth_drawn
    mcx, mcy = (mx0 + mx1) / 2 + jx + yaw, (my0 + my1) / 2 + jy
    mw, mh = (mx1 - mx0) * 0.42, (my1 - my0) * 0.28
    tilt = rng.uniform(-10, 10)
    lip = tuple(float(v) for v in np.array([0.55, 0.18, 0.18]) * rng.uniform(0.7, 1.1))
    ellipse(subject, (mcx, mcy + 0.35 * mh), (mw * 0.9, mh * 0.9), lip, angle=tilt)
    ellipse(subject, (mcx, mcy - 0.35 * mh), (mw, mh * 0.8), tuple(float(v) * 0.7 for v in lip), angle=tilt)
    opening = rng.uniform(0, 0.6)
    if opening > 0.3:
        ellipse(subject, (mcx, mcy), (mw * 0.75, mh * opening), (0.8, 0.78, 0.7), angle=tilt)
    smile = rng.uniform(-0.2, 0.6) * mh * 2.5
    ellipse(
        subject,
        (mcx, mcy - smile),
        (mw * 0.95, max(1.0, abs(smile))),
        (0.08, 0.02, 0.02),
        angle=tilt,
        start=0 if smile >= 0 else 180,
        end=180 if smile >= 0 else 360,
        thickness=max(1, s // 80),
    )
    # Shading over the whole face: the light's gradient, darker towards the rim (a rounded surface), and
    # a faint skin texture.
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
    r2 = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2
    shade = (1 + lx * (xs - cx) / ax + ly * (ys - cy) / ay) * (1 - 0.3 * np.clip(r2, 0, 1) ** 2)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (s, s)).astype(np.float32), (0, 0), s / 40)
    shading = 1 + face_mask * (shade * (1 + 0.2 * texture) - 1)
    subject = subject * shading[..., None]
    # Specular highlights on the light's side: catchlights in both eyes, a glint on the lower lip.
    glint = (1.0, 1.0, 0.97)
    for ex in eye_xs:
        ellipse(
            subject, (ex + gaze + side * 0.45 * eye_ry, eye_y - 0.35 * eye_ry), (eye_ry * 0.28, eye_ry * 0.28), glint
        )
    ellipse(subject, (mcx + side * 0.45 * mw, mcy + 0.5 * mh), (mw * 0.18, mh * 0.22), (0.9, 0.75, 0.72))
    parts = FaceParts(face_box, eyes_box, mouth_box).transformed(1.0, 1.0, -jx, -jy)
    return np.clip(subject, 0, 1), np.clip(alpha, 0, 1), parts


def example_face(size: int = 160, seed: int = 0) -> tuple[np.ndarray, FaceParts]:
    """One simulated camera photo as uint8 [size, size, 3] RGB and its face parts (for docs and tests)."""
    rng = np.random.default_rng(seed)
    settings = draw_settings(rng)
    image, parts = photograph(rng, settings, size)
    return image, parts


# ---------------------------------------------------------------------------------------------------------
# Camera settings and the pipeline
# ---------------------------------------------------------------------------------------------------------
def draw_settings(rng: np.random.Generator, missing: float = 0.0) -> dict:
    """The camera settings of one photo (EXIF codes and values); each tag is absent from the returned
    ``exif_missing`` set with probability ``1 - missing``."""
    program = _pick(rng, EXPOSURE_PROGRAMS)
    ap_idx = {7: (0, 3), 8: (4, len(APERTURES))}.get(program, (0, len(APERTURES)))
    t_idx = (0, 4) if program == 4 else (0, len(EXPOSURE_TIMES))
    make = MAKES[int(rng.integers(len(MAKES)))]
    settings = {
        "make": make,
        "iso": int(rng.choice(ISO_VALUES)),
        "aperture": APERTURES[int(rng.integers(*ap_idx))],
        "exposure_time": EXPOSURE_TIMES[int(rng.integers(*t_idx))],
        "focal_length": int(rng.choice(FOCAL_LENGTHS)),
        "metering_mode": _pick(rng, METERING_MODES),
        "exposure_program": program,
        "exposure_mode": 1 if program == 1 else (2 if rng.random() < 0.05 else 0),
        "white_balance": 0 if rng.random() < 0.65 else 1,
        "illuminant": rng.uniform(-1, 1),
        "tint": rng.uniform(-0.3, 0.3),
    }
    tags = (
        "iso",
        "aperture",
        "exposure_time",
        "focal_length",
        "metering_mode",
        "exposure_program",
        "exposure_mode",
        "white_balance",
        "make",
    )
    settings["exif_missing"] = {t for t in tags if rng.random() < missing}
    return settings


def photograph(rng: np.random.Generator, settings: dict, size: int) -> tuple[np.ndarray, FaceParts]:
    """Render a scene and take its picture with ``settings``: uint8 [size, size, 3] RGB (before JPEG)."""
    make: CameraMake = settings["make"]
    f_number = settings["aperture"][0] / settings["aperture"][1]
    seconds = settings["exposure_time"][0] / settings["exposure_time"][1]
    scene = render_scene(rng, size, settings["focal_length"])
    px = size / 64.0
    # Illuminant: manual white balance leaves a clear cast (at least 0.4 of the full range), auto removes it.
    temp = settings["illuminant"]
    if settings["white_balance"] == 1:
        temp = np.sign(temp or 1.0) * (0.4 + 0.6 * abs(temp))
    cast = np.exp(np.array([0.35 * temp, 0.12 * settings["tint"], -0.35 * temp], np.float32))
    # Optics: background defocus (sigma ~ 1/N), composite, camera shake along a line (length ~ t).
    background = _gaussian(scene.background, 5.0 / f_number * px)
    linear = scene.subject * scene.alpha[..., None] + background * (1 - scene.alpha[..., None])
    linear = linear * cast
    linear = _motion_blur(linear, rng.uniform(0.5, 1.5) * seconds * 60.0 * px, rng.uniform(0, np.pi))
    # Exposure: the metering region is brought to mid-grey, then the shutter time shifts it.
    exposure = 0.18 / max(1e-4, _metered(linear, scene, settings["metering_mode"]))
    raw = linear * exposure * (seconds * 125.0) ** 0.3
    # Sensor: RGGB mosaic, shot + read noise growing with ISO, saturation, 12 bits, demosaicing.
    mosaic = _mosaic(raw)
    gain = settings["iso"] / 100.0
    noise_sd = np.sqrt(4e-5 * gain * np.clip(mosaic, 0, None) + (1.5e-4 * gain) ** 2 + NOISE_FLOOR**2)
    mosaic = mosaic + rng.normal(0.0, 1.0, mosaic.shape).astype(np.float32) * noise_sd
    counts = np.clip(np.rint(mosaic * 4095), 0, 4095).astype(np.uint16)
    rgb = cv2.cvtColor(counts, cv2.COLOR_BayerBG2RGB).astype(np.float32) / 4095.0  # RGGB on OpenCV's naming
    # Processing: white balance (auto: remove the cast, a small error), colour matrix, tone curve, sharpening.
    if settings["white_balance"] == 0:
        rgb = rgb / (cast * np.exp(rng.normal(0, 0.02, 3)).astype(np.float32))
    rgb = np.clip(rgb @ colour_matrix(make).T, 0, 1)
    out = _srgb(rgb)
    out = out + make.sharpen * (out - _gaussian(out, 0.8))
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), scene.parts


def colour_matrix(make: CameraMake) -> np.ndarray:
    """3x3 camera RGB -> output RGB of ``make``: grey kept, chroma scaled by the saturation and rotated by
    the hue angle about the grey axis (rows sum to 1)."""
    grey = np.full((3, 3), 1 / 3, np.float32)
    a = np.deg2rad(make.hue_deg)
    k = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], np.float32) / np.sqrt(3)  # cross product with (1,1,1)/sqrt3
    rotation = np.eye(3, dtype=np.float32) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)
    return (grey + make.saturation * rotation @ (np.eye(3, dtype=np.float32) - grey)).astype(np.float32)


def _pick(rng: np.random.Generator, table: dict) -> int:
    keys = list(table)
    p = np.array([table[k] for k in keys], np.float64)
    return int(keys[int(rng.choice(len(keys), p=p / p.sum()))])


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    return img if sigma < 0.3 else cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)


def _motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    if length < 0.5:
        return img
    k = int(np.ceil(length)) * 2 + 1
    kernel = np.zeros((k * 4, k * 4), np.float32)  # drawn 4x finer, then averaged down: a sub-pixel line
    c, d = k * 2, length * 2
    p0 = (round(c - d * np.cos(angle)), round(c - d * np.sin(angle)))
    p1 = (round(c + d * np.cos(angle)), round(c + d * np.sin(angle)))
    cv2.line(kernel, p0, p1, 1.0, 2)
    kernel = cv2.resize(kernel, (k, k), interpolation=cv2.INTER_AREA)
    return cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101)


def _metered(linear: np.ndarray, scene: Scene, mode: int) -> float:
    lum = linear @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    if mode == 3:  # spot: the face centre
        x0, y0, x1, y1 = scene.parts.face
        w, h = x1 - x0, y1 - y0
        return float(lum[y0 + h // 3 : y1 - h // 3, x0 + w // 3 : x1 - w // 3].mean())
    if mode == 2:  # centre-weighted
        s = lum.shape[0]
        ys, xs = np.mgrid[0:s, 0:s]
        wgt = np.exp(-(((xs - s / 2) ** 2 + (ys - s / 2) ** 2) / (2 * (0.25 * s) ** 2)))
        return float((lum * wgt).sum() / wgt.sum())
    if mode == 5:  # pattern: the frame without its brightest and darkest tenth
        lo, hi = np.quantile(lum, [0.1, 0.9])
        return float(np.clip(lum, lo, hi).mean())
    return float(lum.mean())  # average


def _mosaic(rgb: np.ndarray) -> np.ndarray:
    """RGGB Bayer sampling: [H, W, 3] -> [H, W]."""
    m = np.empty(rgb.shape[:2], np.float32)
    m[0::2, 0::2] = rgb[0::2, 0::2, 0]
    m[0::2, 1::2] = rgb[0::2, 1::2, 1]
    m[1::2, 0::2] = rgb[1::2, 0::2, 1]
    m[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return m


def _srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------
def exif_tags(settings: dict) -> dict[str, str]:
    """The pyexiv2 EXIF dict for ``settings`` (rationals as ``"n/d"`` strings; absent tags left out)."""
    make: CameraMake = settings["make"]
    tags = {
        "make": {"Exif.Image.Make": make.exif_make, "Exif.Image.Model": make.model},
        "iso": {"Exif.Photo.ISOSpeedRatings": str(settings["iso"])},
        "aperture": {"Exif.Photo.FNumber": "{}/{}".format(*settings["aperture"])},
        "exposure_time": {"Exif.Photo.ExposureTime": "{}/{}".format(*settings["exposure_time"])},
        "focal_length": {"Exif.Photo.FocalLength": f"{settings['focal_length']}/1"},
        "metering_mode": {"Exif.Photo.MeteringMode": str(settings["metering_mode"])},
        "exposure_mode": {"Exif.Photo.ExposureMode": str(settings["exposure_mode"])},
        "white_balance": {"Exif.Photo.WhiteBalance": str(settings["white_balance"])},
        "exposure_program": {"Exif.Photo.ExposureProgram": str(settings["exposure_program"])},
    }
    out = {"Exif.Photo.DateTimeOriginal": "2024:06:01 12:00:00"}
    for tag, entries in tags.items():
        if tag not in settings["exif_missing"]:
            out.update(entries)
    return out


def encode_jpeg(image: np.ndarray, settings: dict) -> bytes:
    """The camera's JPEG (make quality and subsampling) with its EXIF, as bytes."""
    import pyexiv2  # lazy: optional dependency (pyexiv2, GPL; only EXIF writing and its reader need it)

    make: CameraMake = settings["make"]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=make.quality, subsampling=make.subsampling)
    with pyexiv2.ImageData(buf.getvalue()) as data:
        data.modify_exif(exif_tags(settings))
        return data.get_bytes()


def label_row(name: str, settings: dict, parts: FaceParts) -> dict:
    """The ground-truth row of the labels CSV: EXIF values in their units and codes (empty when absent)."""
    make: CameraMake = settings["make"]
    row = {
        "file": name,
        "make": make.exif_make,
        "model": make.model,
        "iso": settings["iso"],
        "aperture": float(Fraction(*settings["aperture"])),
        "exposure_time": float(Fraction(*settings["exposure_time"])),
        "focal_length": float(settings["focal_length"]),
        "metering_mode": settings["metering_mode"],
        "exposure_mode": settings["exposure_mode"],
        "white_balance": settings["white_balance"],
        "exposure_program": settings["exposure_program"],
    }
    for tag in settings["exif_missing"]:
        row[tag] = ""
        if tag == "make":
            row["model"] = ""
    row.update(zip(PART_FIELDS, parts.to_list()))
    return row


def simulate_collection(
    out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = 64, missing: float = 0.05, progress: bool = False
) -> list[Path]:
    """Write ``n`` simulated camera photos ``cam_00000.jpg ...`` (JPEG with EXIF) and ``labels.csv`` (the
    settings each photo was taken with, and its face boxes) into ``out_dir``.

    Args:
        size: image side in pixels (the face fills the template box of :class:`TemplateLocator`).
        missing: probability that each EXIF tag is left out of a file.
        progress: show a progress bar.

    Returns the paths of the photos. Photo ``i`` depends only on (seed, i).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, rows = [], []
    for i in _progress(range(n), progress, "simulating camera photos"):
        rng = np.random.default_rng([seed, i, 0])
        settings = draw_settings(rng, missing)
        image, parts = photograph(rng, settings, size)
        path = out / f"cam_{i:05d}.jpg"
        path.write_bytes(encode_jpeg(image, settings))
        paths.append(path)
        rows.append(label_row(path.name, settings, parts))
    _write_csv(out / LABELS_FILE, LABEL_FIELDS + PART_FIELDS, rows)
    return paths


UNCAMERA_KINDS = ("clean", "resynth")


def render_uncamera(rng: np.random.Generator, size: int, kind: str) -> tuple[np.ndarray, FaceParts]:
    """A face scene that skipped the camera: no sensor noise, no mosaic, no make's colour matrix (its colours
    get a saturation and hue no camera here uses), no motion blur, no camera JPEG. ``clean`` is the rendering
    itself (a random background blur imitating depth of field); ``resynth`` is re-synthesised the way a
    generator's upsampling layers make it: drawn at half resolution, upsampled by nearest neighbour and
    smoothed. uint8 [size, size, 3] and the face parts."""
    if kind not in UNCAMERA_KINDS:
        raise ValueError(f"unknown uncamera kind {kind!r}, expected one of {list(UNCAMERA_KINDS)}")
    scene = render_scene(rng, size, float(rng.choice(FOCAL_LENGTHS)))
    background = _gaussian(scene.background, rng.uniform(0.3, 2.8) * size / 64.0)
    linear = scene.subject * scene.alpha[..., None] + background * (1 - scene.alpha[..., None])
    lum = float((linear @ np.array([0.2126, 0.7152, 0.0722], np.float32)).mean())
    colours = CameraMake("none", "", "", rng.uniform(0.6, 1.9), rng.uniform(-25, 25), 0.0, 0, 0)
    out = _srgb(np.clip((linear * 0.18 / max(lum, 1e-4)) @ colour_matrix(colours).T, 0, None))
    if kind == "resynth":
        half = cv2.resize(out, (size // 2, size // 2), interpolation=cv2.INTER_AREA)
        out = cv2.GaussianBlur(cv2.resize(half, (size, size), interpolation=cv2.INTER_NEAREST), (3, 3), 0.6)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), scene.parts


def simulate_uncamera(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    size: int = 64,
    kinds: tuple[str, ...] = UNCAMERA_KINDS,
    progress: bool = False,
) -> list[Path]:
    """Write ``n`` face images that skipped the camera pipeline (``gen_00000.png ...``, no EXIF), cycling
    through ``kinds`` (see :func:`render_uncamera`), and ``labels.csv`` with their kind and face boxes.
    Use a different ``seed`` from the camera collection's."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, rows = [], []
    for i in _progress(range(n), progress, "simulating generated faces"):
        kind = kinds[i % len(kinds)]
        image, parts = render_uncamera(np.random.default_rng([seed, i, 1]), size, kind)
        path = out / f"gen_{i:05d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
        rows.append({"file": path.name, "kind": kind, **dict(zip(PART_FIELDS, parts.to_list()))})
    _write_csv(out / LABELS_FILE, ("file", "kind", *PART_FIELDS), rows)
    return paths


def read_labels(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a simulator ``labels.csv`` (a folder or the file), values as strings ('' = absent)."""
    path = Path(path)
    if path.is_dir():
        path = path / LABELS_FILE
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, fields, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    return tqdm(it, desc=desc, unit="img")
