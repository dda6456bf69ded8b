"""Face locators: where the face, the eyes and the mouth are, for face crops and the face manipulations.

A locator has ``locate(image, source=None) -> list[FaceParts]`` (largest face first; ``[]`` when there is
none); ``image`` is uint8 ``[H, W, 3]`` RGB and ``source`` names the file it came from (locators that look
landmarks up by file use it, the others ignore it). Three kinds:

* :class:`HaarFaceLocator`: OpenCV's bundled Haar cascades (offline; ``opencv-python-headless``); eyes from
  the eye cascade when it finds a plausible pair, otherwise from fixed proportions of the face box.
* :class:`TemplateLocator`: fixed positions, for aligned face crops (and the simulator's faces).
* :class:`LandmarkLocator`: landmarks supplied with the data (68-point iBUG or 5-point layouts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from bfdkern.data.choices import FACE_DETECTOR_NAMES
from bfdkern.data.transforms import Box

# Where eyes and mouth sit inside a frontal face box, as fractions (x0, y0, x1, y1) of the box.
# Measured on OpenCV frontal-face boxes; the eye band holds both eyes, the mouth box the lips.
EYES_IN_FACE = (0.12, 0.20, 0.88, 0.50)
MOUTH_IN_FACE = (0.25, 0.66, 0.75, 0.92)

ALIGNED_TEMPLATE = {
    "face": (0.18, 0.12, 0.82, 0.90),
    "eyes": (0.23, 0.30, 0.77, 0.50),
    "mouth": (0.34, 0.61, 0.66, 0.80),
}
"""Fractions of the image for an aligned face crop; the camera simulator draws its faces to match."""


@dataclass(frozen=True)
class FaceParts:
    """One face: boxes (x0, y0, x1, y1) in pixels for the face, the band of both eyes, and the mouth."""

    face: Box
    eyes: Box
    mouth: Box

    def transformed(self, scale_x: float, scale_y: float, offset_x: float = 0.0, offset_y: float = 0.0) -> FaceParts:
        """Boxes mapped by ``(p - offset) * scale`` (into a crop resized by ``scale``)."""

        def t(b: Box) -> Box:
            return (
                round((b[0] - offset_x) * scale_x),
                round((b[1] - offset_y) * scale_y),
                round((b[2] - offset_x) * scale_x),
                round((b[3] - offset_y) * scale_y),
            )

        return FaceParts(t(self.face), t(self.eyes), t(self.mouth))

    def to_list(self) -> list[int]:
        """The 12 coordinates face, eyes, mouth (for manifests and CSV files)."""
        return [int(v) for b in (self.face, self.eyes, self.mouth) for v in b]

    @classmethod
    def from_list(cls, values) -> FaceParts:
        v = [int(round(float(x))) for x in values]
        if len(v) != 12:
            raise ValueError(f"face parts need 12 coordinates (face, eyes, mouth boxes), got {len(v)}")
        return cls(tuple(v[0:4]), tuple(v[4:8]), tuple(v[8:12]))


class FaceLocator(Protocol):
    def locate(self, image: np.ndarray, source: str | None = None) -> list[FaceParts]:
        """uint8 [H, W, 3] RGB -> the faces found, largest first."""
        ...


def sub_box(box: Box, fractions: tuple[float, float, float, float]) -> Box:
    """The part of ``box`` at the given fractions (x0, y0, x1, y1) of its width and height."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return (
        round(x0 + fractions[0] * w),
        round(y0 + fractions[1] * h),
        round(x0 + fractions[2] * w),
        round(y0 + fractions[3] * h),
    )


def parts_from_face_box(face: Box) -> FaceParts:
    """Eyes and mouth at fixed proportions of a frontal face box."""
    face = tuple(int(v) for v in face)
    return FaceParts(face, sub_box(face, EYES_IN_FACE), sub_box(face, MOUTH_IN_FACE))


class TemplateLocator:
    """Fixed positions for aligned crops: ``face``, ``eyes``, ``mouth`` as fractions (x0, y0, x1, y1) of the
    image (default :data:`ALIGNED_TEMPLATE`). Always returns exactly one face."""

    def __init__(self, face=None, eyes=None, mouth=None):
        self.fractions = {
            "face": tuple(face or ALIGNED_TEMPLATE["face"]),
            "eyes": tuple(eyes or ALIGNED_TEMPLATE["eyes"]),
            "mouth": tuple(mouth or ALIGNED_TEMPLATE["mouth"]),
        }
        for name, f in self.fractions.items():
            if len(f) != 4 or not (0 <= f[0] < f[2] <= 1 and 0 <= f[1] < f[3] <= 1):
                raise ValueError(f"template {name} box {f} must be fractions 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1")

    def locate(self, image: np.ndarray, source: str | None = None) -> list[FaceParts]:
        h, w = image.shape[:2]
        whole = (0, 0, w, h)
        return [FaceParts(*(sub_box(whole, self.fractions[k]) for k in ("face", "eyes", "mouth")))]


class HaarFaceLocator:
    """Frontal faces with OpenCV's Haar cascade (``haarcascade_frontalface_default.xml``, bundled with
    ``opencv-python-headless``); eyes with ``haarcascade_eye.xml`` inside the upper face, else proportions.

    Args:
        min_face: smallest face side as a fraction of the image's shorter side.
        max_side: the image is downscaled so that its longer side is at most this before detection (speed);
            boxes are returned in the original pixels.
        scale_factor, min_neighbors: the cascade's parameters.
        eyes: ``"cascade"`` (fall back to proportions) or ``"proportions"``.
    """

    def __init__(
        self,
        min_face: float = 0.08,
        max_side: int = 640,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        eyes: str = "cascade",
    ):
        if eyes not in ("cascade", "proportions"):
            raise ValueError(f"eyes must be 'cascade' or 'proportions', got {eyes!r}")
        self.min_face, self.max_side = float(min_face), int(max_side)
        self.scale_factor, self.min_neighbors, self.eyes = float(scale_factor), int(min_neighbors), eyes
        self._face = self._eye = None

    def __getstate__(self):  # cascades do not pickle; DataLoader workers reload them
        return {**self.__dict__, "_face": None, "_eye": None}

    def _cascades(self):
        if self._face is None:
            self._face = _load_cascade(cv2, "haarcascade_frontalface_default.xml")
            self._eye = _load_cascade(cv2, "haarcascade_eye.xml")
        return self._face, self._eye

    def locate(self, image: np.ndarray, source: str | None = None) -> list[FaceParts]:
        face_cascade, eye_cascade = self._cascades()
        gray = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        small = (
            cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else gray
        )
        small = cv2.equalizeHist(small)
        min_side = max(20, int(self.min_face * min(small.shape)))
        found = face_cascade.detectMultiScale(
            small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        faces = []
        for x, y, fw, fh in sorted((tuple(int(v) for v in f) for f in found), key=lambda f: -f[2] * f[3]):
            parts = parts_from_face_box((x, y, x + fw, y + fh))
            if self.eyes == "cascade":
                parts = self._with_eyes(small, parts, eye_cascade)
            faces.append(parts.transformed(1 / scale, 1 / scale))
        return faces

    def _with_eyes(self, gray: np.ndarray, parts: FaceParts, eye_cascade) -> FaceParts:
        """Replace the proportional eye band by the union of a plausible detected pair (one eye in each
        half of the upper face, similar sizes and heights)."""
        x0, y0, x1, y1 = parts.face
        fw, fh = x1 - x0, y1 - y0
        upper = gray[y0 : y0 + fh * 55 // 100, x0:x1]
        min_eye = max(8, fw // 10)
        eyes = eye_cascade.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=4, minSize=(min_eye, min_eye))
        left = [e for e in eyes if e[0] + e[2] / 2 < fw / 2]
        right = [e for e in eyes if e[0] + e[2] / 2 >= fw / 2]
        if not left or not right:
            return parts
        a = max(left, key=lambda e: e[2] * e[3])
        b = max(right, key=lambda e: e[2] * e[3])
        if abs((a[1] + a[3] / 2) - (b[1] + b[3] / 2)) > 0.12 * fh or max(a[2], b[2]) > 1.8 * min(a[2], b[2]):
            return parts
        ex0, ey0 = min(a[0], b[0]), min(a[1], b[1])
        ex1, ey1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
        return FaceParts(parts.face, (int(x0 + ex0), int(y0 + ey0), int(x0 + ex1), int(y0 + ey1)), parts.mouth)


def _load_cascade(cv2, name: str):
    path = os.path.join(cv2.data.haarcascades, name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"{path}: OpenCV could not load the Haar cascade (is opencv-python-headless complete?)")
    return cascade


# 68-point iBUG layout: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
# 5-point layout (MTCNN, RetinaFace, InsightFace): left eye, right eye, nose tip, left and right mouth corner.


def parts_from_landmarks(points: np.ndarray) -> FaceParts:
    """Face, eye band and mouth boxes from one face's landmarks ``[68, 2]`` or ``[5, 2]`` (x, y pixels)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] not in (5, 68) or not np.isfinite(p).all():
        raise ValueError(f"landmarks must be finite [68, 2] or [5, 2] (x, y) points, got shape {p.shape}")
    if p.shape[0] == 68:
        eyes, mouth, outline = p[36:48], p[48:68], p[0:27]
        iod = np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0))
        face = _bbox(outline, 0.0)
        face = (face[0], face[1] - 0.25 * iod, face[2], face[3])  # brows -> forehead
        return FaceParts(_round(face), _round(_bbox(eyes, 0.25 * iod)), _round(_bbox(mouth, 0.15 * iod)))
    left, right, nose, ml, mr = p
    iod = float(np.linalg.norm(right - left))
    if iod <= 0:
        raise ValueError("5-point landmarks: the two eyes coincide")
    eye_band = _bbox(np.stack([left, right]), 0.0)
    eye_band = (eye_band[0] - 0.35 * iod, eye_band[1] - 0.22 * iod, eye_band[2] + 0.35 * iod, eye_band[3] + 0.22 * iod)
    mouth = _bbox(np.stack([ml, mr]), 0.0)
    mouth = (mouth[0] - 0.15 * iod, mouth[1] - 0.25 * iod, mouth[2] + 0.15 * iod, mouth[3] + 0.25 * iod)
    cx = (left[0] + right[0]) / 2
    eye_y, mouth_y = (left[1] + right[1]) / 2, (ml[1] + mr[1]) / 2
    face = (cx - 1.1 * iod, eye_y - 0.9 * iod, cx + 1.1 * iod, mouth_y + 0.75 * iod)
    return FaceParts(_round(face), _round(eye_band), _round(mouth))


class LandmarkLocator:
    """Faces from landmarks (or face boxes) supplied with the data.

    Args:
        landmarks: either one array used for every image, or a mapping from a file (full path or file name)
            to such an array: landmarks ``[P, 2]`` for one face or ``[N, P, 2]`` (P = 68 or 5), or face boxes
            ``[4]`` / ``[N, 4]`` (x0, y0, x1, y1; eyes and mouth then at fixed proportions of the box).
    """

    def __init__(self, landmarks):
        if isinstance(landmarks, Mapping):
            self.table = {str(k): self._faces(v, str(k)) for k, v in landmarks.items()}
            self.fixed = None
        else:
            self.table, self.fixed = {}, self._faces(landmarks, "landmarks")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> LandmarkLocator:
        """A JSON object ``{"file name": [[x, y], ...] or [[[x, y], ...], ...]}``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read landmarks JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object mapping file names to landmarks")
        try:
            return cls(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @staticmethod
    def _faces(value, name: str) -> list[FaceParts]:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except ValueError:
            raise ValueError(f"{name}: landmarks or boxes must be a regular array of numbers") from None
        if arr.ndim >= 1 and arr.shape[-1] == 4 and arr.ndim <= 2:  # face boxes
            boxes = arr.reshape(-1, 4)
            if not np.isfinite(boxes).all() or (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
                raise ValueError(f"{name}: face boxes must be finite (x0, y0, x1, y1) with x0 < x1 and y0 < y1")
            faces = [parts_from_face_box(tuple(int(round(v)) for v in b)) for b in boxes]
        else:
            if arr.ndim == 2:
                arr = arr[None]
            try:
                faces = [parts_from_landmarks(a) for a in arr]
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return sorted(faces, key=lambda f: -(f.face[2] - f.face[0]) * (f.face[3] - f.face[1]))

    def locate(self, image: np.ndarray, source: str | None = None) -> list[FaceParts]:
        if self.fixed is not None:
            return list(self.fixed)
        if source is None:
            return []
        found = self.table.get(str(source))
        if found is None:
            found = self.table.get(Path(source).name, [])
        return list(found)


def _bbox(points: np.ndarray, pad: float) -> tuple[float, float, float, float]:
    return (points[:, 0].min() - pad, points[:, 1].min() - pad, points[:, 0].max() + pad, points[:, 1].max() + pad)


def _round(box) -> Box:
    return tuple(int(round(v)) for v in box)


# ---------------------------------------------------------------------------------------------------------
# Face parts as fractions of the image (what manifests store), keypoint layouts, and a second detector
# ---------------------------------------------------------------------------------------------------------
def normalized_parts(parts: FaceParts, width: int, height: int) -> tuple[float, ...]:
    """The 12 coordinates of ``parts`` (face, eyes, mouth; pixels) as fractions of a ``width x height`` image."""
    return tuple(float(v) / (width if i % 2 == 0 else height) for i, v in enumerate(parts.to_list()))


def parts_in_pixels(fractions, width: int, height: int) -> FaceParts:
    """Inverse of :func:`normalized_parts`: 12 fractions -> :class:`FaceParts` in pixels of a ``width x height``
    image (rounded)."""
    return FaceParts.from_list([f * (width if i % 2 == 0 else height) for i, f in enumerate(fractions)])


def parts_from_eyes_and_mouth(face: Box, eye_a, eye_b, mouth_center) -> FaceParts:
    """Eye band and mouth boxes from the two eye centres and the mouth centre (x, y; any one unit for x and y),
    sized by the distance between the eyes (iod) as :func:`parts_from_landmarks` sizes the 5-point layout;
    ``face`` is kept as given. Floats in, floats out (round with :func:`_round` for pixels)."""
    a, b, m = (np.asarray(p, dtype=np.float64) for p in (eye_a, eye_b, mouth_center))
    iod = float(np.linalg.norm(b - a))
    if not iod > 0 or not np.isfinite([*a, *b, *m]).all():
        raise ValueError("eye and mouth points must be finite and the two eyes distinct")
    eyes = _bbox(np.stack([a, b]), 0.0)
    eyes = (eyes[0] - 0.35 * iod, eyes[1] - 0.22 * iod, eyes[2] + 0.35 * iod, eyes[3] + 0.22 * iod)
    half_w, half_h = 0.55 * iod, 0.3 * iod  # lips span ~0.83 iod (mouth corners), with a margin
    mouth = (m[0] - half_w, m[1] - half_h, m[0] + half_w, m[1] + half_h)
    return FaceParts(tuple(face), eyes, mouth)


FDF_KEYPOINTS = ("nose", "r_eye", "l_eye", "r_ear", "l_ear", "r_shoulder", "l_shoulder")
"""FDF's 7 keypoints, in the order of ``landmark`` in ``fdf_metainfo.json``."""


def parts_from_fdf(box, keypoints=None) -> tuple[float, ...]:
    """FDF face parts as fractions of the (square) image: ``box`` the normalised ``bounding_box`` (x0, y0, x1,
    y1); ``keypoints`` the normalised ``landmark`` [7, 2] in :data:`FDF_KEYPOINTS` order. FDF has no mouth
    point: the mouth centre is the nose tip mirrored away from the midpoint of the eyes (on frontal faces the
    nose tip sits halfway between the eye line and the mouth). Without keypoints, eyes and mouth take the
    fixed proportions of the box. Raises ValueError for a box without area or non-finite numbers."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"bounding_box {list(box)} is not a finite (x0, y0, x1, y1) with x0 < x1 and y0 < y1")
    face = tuple(float(v) for v in b)
    if keypoints is None:
        return tuple(
            v for part in (face, _sub_box_f(face, EYES_IN_FACE), _sub_box_f(face, MOUTH_IN_FACE)) for v in part
        )
    k = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    if k.shape[0] < 3:
        raise ValueError(f"FDF landmark needs at least nose, r_eye, l_eye; got {k.shape[0]} points")
    nose, right, left = k[0], k[1], k[2]
    mouth = nose + (nose - (right + left) / 2)
    parts = parts_from_eyes_and_mouth(face, right, left, mouth)
    return tuple(float(v) for box_ in (parts.face, parts.eyes, parts.mouth) for v in box_)


def _sub_box_f(box, fractions) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return (x0 + fractions[0] * w, y0 + fractions[1] * h, x0 + fractions[2] * w, y0 + fractions[3] * h)


class MediaPipeFaceLocator:
    """Faces with MediaPipe's BlazeFace detectors (bundled in the ``mediapipe`` wheel, 0.10.x legacy
    solutions API): the short-range model (faces within ~2 m, close-ups) first, the full-range model when it
    finds none. Eyes and mouth come from its keypoints (eye centres, mouth centre), not from proportions.

    On ``../shared/data/faces`` (53 uncropped real photos, every one with a face) it finds a face in 51
    (Haar: 47) with fewer false boxes; see docs/data.md. Optional: ``pip install mediapipe``; note that its
    wheel depends on ``opencv-contrib-python``, which replaces ``opencv-python-headless``'s ``cv2`` module
    (the two cannot be installed side by side), so install it with ``--no-deps`` beside the headless OpenCV
    and add ``absl-py flatbuffers "protobuf<5" attrs`` by hand.

    Args:
        min_confidence: the detectors' score threshold.
        max_side: images are downscaled to this longer side before detection; boxes come back in the
            original pixels.
    """

    def __init__(self, min_confidence: float = 0.5, max_side: int = 640):
        self.min_confidence, self.max_side = float(min_confidence), int(max_side)
        self._detectors = None

    def __getstate__(self):  # detector graphs do not pickle; each process builds its own
        return {**self.__dict__, "_detectors": None}

    @staticmethod
    def version() -> str:
        import mediapipe  # lazy: optional dependency (mediapipe, not installed by default)

        return f"mediapipe {mediapipe.__version__}"

    def _models(self):
        if self._detectors is None:
            try:
                import mediapipe as mp  # lazy: optional dependency (mediapipe, not installed by default)
            except ImportError:
                raise ImportError(
                    "the mediapipe face detector needs the mediapipe package: pip install --no-deps mediapipe==0.10.14 "
                    'absl-py flatbuffers "protobuf<5" attrs (see docs/data.md); or use the Haar detector'
                ) from None
            solution = mp.solutions.face_detection
            self._detectors = [
                solution.FaceDetection(model_selection=m, min_detection_confidence=self.min_confidence) for m in (0, 1)
            ]
        return self._detectors

    def locate(self, image: np.ndarray, source: str | None = None) -> list[FaceParts]:
        rgb = np.ascontiguousarray(image[:, :, :3])
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1:
            rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        for detector in self._models():
            found = detector.process(rgb).detections or []
            if found:
                break
        faces = []
        for det in found:
            box = det.location_data.relative_bounding_box
            points = [(p.x * w, p.y * h) for p in det.location_data.relative_keypoints]
            face = (box.xmin * w, box.ymin * h, (box.xmin + box.width) * w, (box.ymin + box.height) * h)
            face = (max(0.0, face[0]), max(0.0, face[1]), min(float(w), face[2]), min(float(h), face[3]))
            if face[2] <= face[0] or face[3] <= face[1] or len(points) < 4:
                continue
            try:
                parts = parts_from_eyes_and_mouth(face, points[0], points[1], points[3])
            except ValueError:
                parts = parts_from_face_box(_round(face))
            faces.append(FaceParts(_round(parts.face), _round(parts.eyes), _round(parts.mouth)))
        return sorted(faces, key=lambda f: -(f.face[2] - f.face[0]) * (f.face[3] - f.face[1]))


FACE_DETECTORS = {"haar": HaarFaceLocator, "mediapipe": MediaPipeFaceLocator}
"""Face detectors by the name ``--face-detector`` takes (besides ``auto``: MediaPipe when the mediapipe package
is installed, else Haar, OpenCV's bundled cascades, which need nothing beyond opencv-python-headless)."""

DETECTOR_NAMES = FACE_DETECTOR_NAMES
"""Every name :func:`face_detector` takes (``auto`` and :data:`FACE_DETECTORS`; a test keeps them in step)."""


def face_detector(name: str = "auto") -> FaceLocator:
    """A detector of :data:`FACE_DETECTORS` by name; ``auto``: MediaPipe where it is installed, else Haar."""
    if name == "auto":
        try:
            # lazy: optional dependency (mediapipe, not installed by default)
            import mediapipe  # noqa: F401
        except ImportError:
            return HaarFaceLocator()
        return MediaPipeFaceLocator()
    try:
        return FACE_DETECTORS[name]()
    except KeyError:
        raise ValueError(f"unknown face detector {name!r}; expected one of {list(DETECTOR_NAMES)}") from None


def detector_id(locator) -> str:
    """What found a face, as the manifest records it: detector, library and version (``"haar opencv 4.10.0"``)."""
    if isinstance(locator, HaarFaceLocator):
        return f"haar opencv {cv2.__version__} min_face={locator.min_face} eyes={locator.eyes}"
    if isinstance(locator, MediaPipeFaceLocator):
        return f"{locator.version()} blazeface short+full min_confidence={locator.min_confidence}"
    return f"{type(locator).__module__}.{type(locator).__qualname__}"
