"""Named ablations and baselines of BLADES as configuration: each preset is a set of
:class:`~bfdkern.training.PretrainConfig` overrides plus :class:`~bfdkern.detect.OneClassDetector` options,
so every one runs through the same trainer, detector and evaluation (``bfdkern pretrain --preset NAME``,
``bfdkern ablate --presets a,b``).

``bfdkern pretrain --help`` reads :data:`PRESETS` from this module without torch, so the functions that run a
preset import the trainer, the detectors and NumPy when they are called.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from bfdkern.figures import pyplot, save_figure
from bfdkern.tasks import blades_spec
from bfdkern.training.config import PretrainConfig

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


# --- running presets side by side ------------------------------------------------------------------------


@dataclass
class ImageSets:
    """The held-out images every preset is judged on: ``fit`` reals for the one-class detector, ``real`` test
    reals, and ``fakes`` generator name -> its test images (lists of paths)."""

    fit: list
    real: list
    fakes: dict


def _pretrained(config, run_dir, echo) -> tuple:
    """Pretrain ``config`` in ``run_dir``: a finished run with the same configuration is reused, an unfinished one
    is resumed, a different one is an error naming the folder. Returns (run_dir, steps)."""
    from bfdkern.models import CHECKPOINT_NAME as ENCODER_NAME  # lazy: CLI start-up (pretrain --help)
    from bfdkern.training import pretrain  # lazy: CLI start-up (pretrain --help)
    from bfdkern.training.run import is_run_dir  # lazy: CLI start-up (pretrain --help)

    run_dir = Path(run_dir)
    resume = is_run_dir(run_dir)
    if resume:
        try:
            config = PretrainConfig.load(run_dir).resumed_with(config.to_dict())
        except ValueError as exc:
            raise ValueError(f"{run_dir}: holds a different run ({exc}); choose another --out") from None
        if (run_dir / ENCODER_NAME).is_file():
            echo(f"  reusing the finished run in {run_dir}")
            return run_dir, None
    result = pretrain(config, run_dir, resume=resume, echo=echo)
    if result.status != "finished":
        raise KeyboardInterrupt
    return run_dir, result.steps


def run_preset(preset: Preset, base: dict, sets: ImageSets, out_dir, *, echo=print, feature_options=None) -> dict:
    """Pretrain ``preset`` (``base`` PretrainConfig fields, then the preset's), fit its one-class detector on
    ``sets.fit`` and evaluate it on ``sets.real`` against each of ``sets.fakes``.

    Files under ``out_dir/NAME``: ``run/`` (the pretraining run), ``oneclass.npz``, ``results.csv`` and plots.
    Returns one comparison row: preset, description, tasks, lambda, components, normalized, AUC per generator
    (``auc_<name>``) and the means of every metric of :mod:`bfdkern.detect.metrics` (fractions)."""
    # lazy: CLI start-up (pretrain --help)
    from bfdkern.detect import OneClassDetector, Preprocessing, evaluate_scores, save_detector, write_results
    from bfdkern.detect.encoder import load_encoder  # lazy: CLI start-up (pretrain --help)

    folder = Path(out_dir) / preset.name
    config = PretrainConfig(**{**base, **preset.pretrain})
    echo(f"{preset.name}: {preset.description}")
    run_dir, _ = _pretrained(config, folder / "run", echo)
    encoder = load_encoder(run_dir, embedding=not preset.normalize)
    prep = Preprocessing(size=config.image_size, face_crop=config.face_crop)
    kw = dict(feature_options or {})
    options = {"n_components": 10, "seed": config.seed, **preset.oneclass}
    detector = OneClassDetector(**options).fit(encoder.features(sets.fit, prep, **kw))
    save_detector(folder / "oneclass.npz", detector, encoder=encoder.identity, preprocessing=prep)
    real = detector.score(encoder.features(sets.real, prep, **kw))
    fakes = {name: detector.score(encoder.features(paths, prep, **kw)) for name, paths in sets.fakes.items()}
    result = evaluate_scores(detector, real, fakes)
    write_results(
        result,
        folder,
        real_paths=sets.real,
        real_scores=real,
        fake_paths=sets.fakes,
        fake_scores=fakes,
        detector=detector,
    )
    lam = "fixed" if config.fixed_lambda else f"bi-level every {config.outer_every}"
    row = {
        "preset": preset.name,
        "description": preset.description,
        "tasks": len(config.task_spec().names),
        "lambda": lam,
        "components": options["n_components"],
        "normalized": bool(options.get("normalize", True)),
    }
    row.update({f"auc_{r['generator']}": r["auc"] for r in result["rows"] if r["generator"] != "mean"})
    row.update(result["mean"])
    echo(f"  mean AUC {100 * row['auc']:.2f}%, AP (fake +) {100 * row['ap_fake']:.2f}%, ACC {100 * row['acc']:.2f}%")
    return row


def write_comparison(
    rows: list[dict], out_dir, *, label: str = "preset", stem: str = "ablations", title: str | None = None
) -> dict:
    """``out_dir/STEM.csv`` (one row each, named by its ``label`` column; metrics as fractions) and
    ``STEM.png`` (mean AUC and AP per row, percent). Returns {"csv": path, "png": path}."""
    import numpy as np  # lazy: CLI start-up (pretrain --help)

    if not rows:
        raise ValueError("no preset results to compare")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    csv_path = out / f"{stem}.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 4))
    x = np.arange(len(rows))
    for offset, metric, name in ((-0.2, "auc", "AUC"), (0.2, "ap_fake", "AP (fake +)")):
        ax.bar(x + offset, [100 * r[metric] for r in rows], width=0.4, label=name)
    ax.set_xticks(x, [r[label] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("mean over generators (%)")
    ax.set_ylim(0, 100)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.legend(loc="lower right")
    ax.set_title(title or f"detection by {label}")
    return {"csv": csv_path, "png": save_figure(fig, out / f"{stem}.png")}


def format_comparison(rows: list[dict]) -> str:
    """The comparison as a fixed-width text table (metrics in percent)."""
    width = max(len("preset"), *(len(r["preset"]) for r in rows))
    head = f"{'preset':<{width}}  {'tasks':>5}  {'lambda':<20}  {'AUC %':>6}  {'AP(fake+) %':>11}  {'ACC %':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['preset']:<{width}}  {r['tasks']:>5}  {r['lambda']:<20}  {100 * r['auc']:6.2f}  "
            f"{100 * r['ap_fake']:11.2f}  {100 * r['acc']:6.2f}"
        )
    return "\n".join(lines)
