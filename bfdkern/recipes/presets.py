"""Named ablations and baselines of BLADES as configuration: each preset is a set of
:class:`~bfdkern.training.PretrainConfig` overrides plus :class:`~bfdkern.detect.OneClassDetector` options,
so every one runs through the same trainer, detector and evaluation (``bfdkern pretrain --preset NAME``,
``bfdkern ablate --presets a,b``; :mod:`bfdkern.recipes.ablations` runs them).

Torch-free: ``bfdkern pretrain --help`` and ``ablate --help`` list :data:`PRESETS` from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bfdkern.tasks import blades_spec

TASK_GROUPS = ("ordinal", "categorical", "binary", "multilabel")
"""Task kinds usable as group names in :func:`tasks_without` (``--drop-tasks ordinal``)."""


def tasks_without(*names: str) -> list[str]:
    """The BLADES task names minus ``names``: task names (``region``) or task kinds (``categorical``)."""
    spec = blades_spec()
    unknown = sorted(set(names) - set(spec.names) - set(TASK_GROUPS))
    if unknown:
        raise ValueError(
            f"unknown tasks or task kinds {unknown} (tasks: {list(spec.names)}; kinds: {list(TASK_GROUPS)})"
        )
    return [t.name for t in spec if t.name not in names and t.kind not in names]


def parse_names(text: str, option: str) -> list[str]:
    """``"a,b, c"`` -> ["a", "b", "c"]; an empty item is an error naming ``option``."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"{option} {text!r}: expected comma-separated names, for example {option} iso,manipulated")
    return items


@dataclass(frozen=True)
class Preset:
    """One ablation or baseline.

    Attributes:
        name: the preset's name on the command line.
        description: one line for tables and ``--help``.
        pretrain: :class:`~bfdkern.training.PretrainConfig` field -> value.
        oneclass: :class:`~bfdkern.detect.OneClassDetector` keyword -> value (``normalize=False`` also makes
            the detector see the encoder's un-normalised embedding, see :class:`~bfdkern.detect.encoder.EmbeddingFeatures`).
    """

    name: str
    description: str
    pretrain: dict = field(default_factory=dict)
    oneclass: dict = field(default_factory=dict)

    @property
    def normalize(self) -> bool:
        """Whether the one-class detector sees L2-normalised features."""
        return bool(self.oneclass.get("normalize", True))


_ORDINAL_AND_OUTER = [t.name for t in blades_spec() if t.kind == "ordinal" or t.outer]

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("blades", "BLADES: all 11 tasks, bi-level lambda every step"),
        Preset("equal-lambda", "BLADES with fixed equal lambda (no outer loop)", {"fixed_lambda": True}),
        Preset(
            "no-categorical", "BLADES without the 5 categorical EXIF tasks", {"tasks": tasks_without("categorical")}
        ),
        Preset("no-ordinal", "BLADES without the 4 ordinal EXIF tasks", {"tasks": tasks_without("ordinal")}),
        Preset("no-region", "BLADES without the region task", {"tasks": tasks_without("region")}),
        Preset("lambda-every-10", "BLADES with lambda updated every 10 steps", {"outer_every": 10}),
        Preset(
            "zou25",
            "Zou25: 4 ordinal EXIF rankings (raw scores) + manipulation, unweighted sum; 12-component GMM on "
            "unnormalised features",
            {"tasks": _ORDINAL_AND_OUTER, "fixed_lambda": True, "ordinal_levels": 1},
            {"n_components": 12, "normalize": False},
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets are {list(PRESETS)}")
    return PRESETS[name]
