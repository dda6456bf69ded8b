"""Robustness perturbations: JPEG re-compression, Gaussian blur, down-and-up resizing and Gaussian noise,
applied identically to real and fake images after the common preprocessing (on the ``size x size`` pixels the
encoder is about to see), alone or chained.

Written ``KIND=VALUE`` and chained with ``+``, left to right: ``jpeg=95``, ``blur=1.0``, ``resize=0.5``,
``resize=0.5:bilinear``, ``noise=2``, ``blur=1+jpeg=75``.

* ``jpeg=Q``: a baseline JPEG at quality Q (1..100; the IJG quantisation tables scaled to Q, 4:2:0), decoded.
* ``blur=S``: a Gaussian blur of standard deviation S pixels (``scipy.ndimage.gaussian_filter``, kernel cut
  at 4 S, borders mirrored), per channel.
* ``resize=F[:FILTER]``: resized by the factor F (0 < F < 1 shrinks) and back to the original size, both
  with FILTER (``nearest``, ``box``, ``bilinear``, ``hamming``, ``bicubic`` (default), ``lanczos``; Pillow's
  filters, no reducing gap).
* ``noise=S``: additive Gaussian noise of standard deviation S grey levels (0..255), then rounded and clipped;
  its random numbers come from ``(seed, the image's content hash)`` only, so a run is repeatable and an image
  gets the same noise whatever the order or batching.

Every step is deterministic; the result is uint8 ``[H, W, 3]`` of the input's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bfdkern.data.decode import reencode_jpeg

RESIZE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
KINDS = ("jpeg", "blur", "resize", "noise")
EXAMPLES = "jpeg=95, blur=1.0, resize=0.5, resize=0.5:bilinear, noise=2, blur=1+jpeg=75"


@dataclass(frozen=True)
class Step:
    """One perturbation: ``kind`` (one of :data:`KINDS`), its ``value`` and, for resizing, the ``filter``."""

    kind: str
    value: float
    filter: str = "bicubic"

    @property
    def name(self) -> str:
        """The step as written: ``jpeg=95``, ``blur=1``, ``resize=0.5`` (``resize=0.5:bilinear``)."""
        text = f"{self.kind}={self.value:g}"
        return text + (f":{self.filter}" if self.kind == "resize" and self.filter != "bicubic" else "")


@dataclass(frozen=True)
class Perturbation:
    """A chain of :class:`Step` applied left to right; ``seed`` drives the noise steps only."""

    steps: tuple[Step, ...]
    seed: int = 0

    @property
    def name(self) -> str:
        """The chain as written, e.g. ``blur=1+jpeg=75`` (the seed is not part of the name)."""
        return "+".join(s.name for s in self.steps)

    @property
    def random(self) -> bool:
        """Whether a step draws random numbers (then the seed is part of the result)."""
        return any(s.kind == "noise" for s in self.steps)

    def key(self) -> str:
        """The name plus the seed when it matters: what a cache of perturbed features is keyed by."""
        return self.name + (f"@seed={self.seed}" if self.random else "")

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> Perturbation:
        """``"blur=1.0+jpeg=95"`` -> the perturbation; ValueError naming the bad part and the expected form."""
        parts = [p.strip() for p in str(text).split("+")]
        if not text or not all(parts):
            raise ValueError(f"perturbation {text!r}: expected KIND=VALUE chained with '+', e.g. {EXAMPLES}")
        return cls(tuple(_parse_step(p, text) for p in parts), int(seed))

    def apply(self, array: np.ndarray, key: bytes | str | int = 0) -> np.ndarray:
        """uint8 ``[H, W, 3]`` -> the perturbed uint8 ``[H, W, 3]``; ``key`` (the image's content hash) and
        the seed choose the noise."""
        x = np.asarray(array)
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"expected uint8 [H, W, 3] pixels, got {x.dtype} {x.shape}")
        for i, step in enumerate(self.steps):
            x = _apply(step, x, _rng(self.seed, key, i) if step.kind == "noise" else None)
        return x


def _parse_step(part: str, whole: str) -> Step:
    kind, sep, value = part.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise ValueError(f"perturbation {whole!r}: {part!r} is not KIND=VALUE with KIND one of {list(KINDS)}")
    value, _, filt = value.partition(":")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"perturbation {whole!r}: {value!r} in {part!r} is not a number") from None
    if filt and kind != "resize":
        raise ValueError(f"perturbation {whole!r}: only resize takes a filter (resize=0.5:bilinear), not {kind}")
    if kind == "jpeg" and not (number == int(number) and 1 <= number <= 100):
        raise ValueError(f"perturbation {whole!r}: JPEG quality must be a whole number in 1..100, got {value}")
    if kind in ("blur", "noise") and not number > 0:
        raise ValueError(f"perturbation {whole!r}: {kind} needs a positive standard deviation, got {value}")
    if kind == "resize":
        if not 0 < number <= 4 or number == 1:
            raise ValueError(f"perturbation {whole!r}: resize factor must be in (0, 4] and not 1, got {value}")
        filt = (filt or "bicubic").lower()
        if filt not in RESIZE_FILTERS:
            raise ValueError(f"perturbation {whole!r}: unknown filter {filt!r}, expected one of {list(RESIZE_FILTERS)}")
        return Step(kind, number, filt)
    return Step(kind, number)


def _rng(seed: int, key: bytes | str | int, index: int) -> np.random.Generator:
    if isinstance(key, str):
        key = bytes.fromhex(key) if all(c in "0123456789abcdef" for c in key.lower()) else key.encode()
    if isinstance(key, bytes):
        key = int.from_bytes(key[:16].ljust(16, b"\0"), "little")
    return np.random.default_rng([int(seed), int(key) & (2**128 - 1), index])


def _apply(step: Step, x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    if step.kind == "jpeg":
        return np.asarray(reencode_jpeg(x, int(step.value)), dtype=np.uint8)
    if step.kind == "blur":
        from scipy.ndimage import gaussian_filter  # lazy: heavy (scipy.ndimage, ~0.2 s), only the blur perturbation

        out = gaussian_filter(x.astype(np.float64), sigma=(step.value, step.value, 0), mode="mirror", truncate=4.0)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if step.kind == "resize":
        h, w = x.shape[:2]
        small = (max(1, round(w * step.value)), max(1, round(h * step.value)))
        filt = RESIZE_FILTERS[step.filter]
        image = Image.fromarray(x, mode="RGB").resize(small, filt).resize((w, h), filt)
        return np.asarray(image, dtype=np.uint8)
    noise = rng.normal(0.0, step.value, x.shape)
    return np.clip(np.rint(x + noise), 0, 255).astype(np.uint8)
