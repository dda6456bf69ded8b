"""Presets run side by side: each preset (:mod:`bfdkern.recipes.presets`) pretrained, its one-class detector
fitted on the same real images and evaluated on the same fakes, and the results compared in one table and
one figure (``bfdkern ablate``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bfdkern.detect import OneClassDetector, Preprocessing, evaluate_scores, save_detector, write_results
from bfdkern.detect.encoder import load_encoder
from bfdkern.figures import pyplot, save_figure
from bfdkern.models import CHECKPOINT_NAME as ENCODER_NAME
from bfdkern.recipes.presets import Preset
from bfdkern.training import pretrain
from bfdkern.training.config import PretrainConfig
from bfdkern.training.run import is_run_dir


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
