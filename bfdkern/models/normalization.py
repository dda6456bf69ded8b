"""The input statistics an encoder expects: images in [0, 1] are normalised per channel with a mean and a
standard deviation that belong to the weights (torchvision's ImageNet models were trained with ImageNet's,
the authors' BLADES, Zou25 and EAL encoders with CLIP's). Encoder files store them; nothing else hard-codes
them."""

from __future__ import annotations

import math

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""torchvision's ImageNet statistics (its pretrained ResNets expect them; the default for random starts)."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""CLIP's statistics, used by the authors' BLADES, Zou25 and EAL code for every image."""

STATISTICS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}
"""Named statistics: name -> (mean, std)."""


def checked_statistics(mean, std, where: str = "normalisation") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) as two tuples of 3 finite floats, std > 0; ValueError naming ``where`` otherwise."""
    out = []
    for name, values in (("mean", mean), ("std", std)):
        try:
            values = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {name} must be 3 numbers (R, G, B), got {values!r}") from None
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{where}: {name} must be 3 finite numbers (R, G, B), got {values!r}")
        out.append(values)
    if not all(s > 0 for s in out[1]):
        raise ValueError(f"{where}: std must be > 0, got {out[1]!r}")
    return out[0], out[1]


def statistics_name(mean, std) -> str | None:
    """``"imagenet"`` or ``"clip"`` when (mean, std) are those (to 1e-6), else None."""
    for name, (m, s) in STATISTICS.items():
        if all(abs(a - b) <= 1e-6 for a, b in zip((*mean, *std), (*m, *s))):
            return name
    return None
