"""Evaluation of a detector against one or more real sources and one or more generators.

Every (real source, generator) pair is scored as one real-vs-fake test with every metric of
:mod:`bfdkern.detect.metrics` (fake = the positive class; the real-positive AP beside it), then the mean over
generators for each source, and, with several real sources, the mean over sources for each generator and
overall. A detector's own score is turned into "fakeness" (higher = more fake) first:

* one-class detector: the score is the log-likelihood under the real faces' mixture, so fakeness = -score;
  it calls an image fake when its score is below the threshold;
* binary detector (and CNND, GramNet): the score is P(fake) = fakeness; fake when P(fake) > 0.5;
* Hu21: the score is the highlight IoU (high = real), fakeness = -score.

The accuracies use the detector's own decision (``detector.decide``) at its own threshold.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from bfdkern.detect.metrics import METRIC_KEYS, METRIC_LABELS, detection_metrics
from bfdkern.detect.plots import plot_histograms, plot_roc

MEAN = "mean"
"""The name of the mean rows (over generators) and of the mean source (over real sources)."""


def fakeness(detector, scores) -> np.ndarray:
    """A detector's scores [N] oriented so that higher = more fake (negated when its positive class is real)."""
    s = np.asarray(scores, dtype=np.float64)
    if detector.positive_class not in ("real", "fake"):
        raise ValueError(f"positive_class must be 'real' or 'fake', got {detector.positive_class!r}")
    return -s if detector.positive_class == "real" else s


def labelled(real_scores, fake_scores, positive_class: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate real then fake scores with labels: (labels [N], scores [N]), label 1 = ``positive_class``
    ("real" or "fake"); for the generic metric functions."""
    if positive_class not in ("real", "fake"):
        raise ValueError(f"positive_class must be 'real' or 'fake', got {positive_class!r}")
    real = np.asarray(real_scores, dtype=np.float64)
    fake = np.asarray(fake_scores, dtype=np.float64)
    real_label = 1 if positive_class == "real" else 0
    labels = np.r_[np.full(len(real), real_label), np.full(len(fake), 1 - real_label)].astype(np.int64)
    return labels, np.r_[real, fake]


def _cell(detector, real, fake) -> dict:
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    metrics = detection_metrics(
        fakeness(detector, real), fakeness(detector, fake), detector.decide(real), detector.decide(fake)
    )
    return {"n_real": int(len(real)), "n_fake": int(len(fake)), **metrics}


def _mean(cells: list[dict]) -> dict:
    return {m: float(np.mean([c[m] for c in cells])) for m in METRIC_KEYS}


def evaluate_scores(detector, real_scores, fake_scores: dict[str, np.ndarray]) -> dict:
    """Metrics per (real source, generator) and their means.

    Args:
        detector: gives ``kind``, ``positive_class``, ``score_name``, ``threshold`` and ``decide``.
        real_scores: [Nr] the detector's scores of the real images, or real source name -> [Nr_s].
        fake_scores: generator name -> [Nf] scores of its images.

    Returns:
        ``{"detector", "positive_class", "score", "threshold", "real_sources", "generators", "rows", "mean"}``:
        ``rows`` holds ``{"real", "generator", "n_real", "n_fake", <metric>...}`` for every source x generator,
        then ``generator="mean"`` per source; with several sources also ``real="mean"`` rows (mean over sources)
        per generator and overall. ``mean`` is the overall mean (over generators, and sources). Metrics are
        fractions in [0, 1].
    """
    if not fake_scores:
        raise ValueError("no generator to evaluate against (give at least one --fake NAME=DIR)")
    reals = real_scores if isinstance(real_scores, dict) else {"real": real_scores}
    if not reals:
        raise ValueError("no real images to evaluate against (give at least one --real DIR)")
    for name, scores in [*reals.items(), *fake_scores.items()]:
        if len(scores) == 0:
            raise ValueError(f"{name}: no image could be scored")
    rows, per_source = [], {}
    for source, real in reals.items():
        cells = []
        for gen, fake in fake_scores.items():
            cells.append({"real": source, "generator": gen, **_cell(detector, real, fake)})
        per_source[source] = cells
        rows += cells
        rows.append({"real": source, "generator": MEAN, "n_real": int(len(real)), "n_fake": None, **_mean(cells)})
    overall = rows[-1]
    if len(reals) > 1:
        for g, gen in enumerate(fake_scores):
            cells = [per_source[s][g] for s in reals]
            rows.append({"real": MEAN, "generator": gen, "n_real": None, "n_fake": cells[0]["n_fake"], **_mean(cells)})
        overall = {"real": MEAN, "generator": MEAN, "n_real": None, "n_fake": None, **_mean(rows[-len(fake_scores) :])}
        rows.append(overall)
    return {
        "detector": detector.kind,
        "positive_class": detector.positive_class,
        "score": detector.score_name,
        "threshold": float(detector.threshold),
        "real_sources": list(reals),
        "generators": list(fake_scores),
        "rows": rows,
        "mean": {m: overall[m] for m in METRIC_KEYS},
    }


def format_table(result: dict, metrics=METRIC_KEYS) -> str:
    """One detector's result as a fixed-width text table (generators as rows, metrics in percent), one block per
    real source, with the conventions in a header line."""
    lines = [
        f"{result['detector']} detector; score = {result['score']} (positive class of the score: "
        f"{result['positive_class']}); threshold = {result['threshold']:.6g}; metrics: fake = positive class"
    ]
    names = [r["generator"] for r in result["rows"]]
    width = max(len("generator"), *(len(n) for n in names))
    cols = [METRIC_LABELS[m] for m in metrics]
    head = f"{'generator':<{width}}  {'n_real':>6}  {'n_fake':>6}  " + "  ".join(f"{c:>9}" for c in cols)
    for source in dict.fromkeys(r["real"] for r in result["rows"]):
        title = "mean over the real sources" if source == MEAN else f"real: {source}"
        lines += ["", title, head, "-" * len(head)]
        for r in (r for r in result["rows"] if r["real"] == source):
            if r["generator"] == MEAN:
                lines.append("-" * len(head))
            n_real = "" if r["n_real"] is None else r["n_real"]
            n_fake = "" if r["n_fake"] is None else r["n_fake"]
            values = "  ".join(f"{100 * r[m]:9.2f}" for m in metrics)
            lines.append(f"{r['generator']:<{width}}  {n_real:>6}  {n_fake:>6}  {values}")
    return "\n".join(lines)


def write_results(
    result: dict,
    out_dir: str | os.PathLike,
    *,
    real_paths,
    real_scores,
    fake_paths: dict[str, list],
    fake_scores: dict[str, np.ndarray],
    detector,
) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` (one row per real source x generator, and the means; then the
    same for each of ``result["perturbed"]``, when present, named in the first column),
    ``scores.csv`` (one row per image), ``roc.png`` and ``histograms.png`` into ``out_dir``.

    ``real_paths`` / ``real_scores`` are one list / array, or real source name -> list / array (as in
    :func:`evaluate_scores`). Returns name -> path."""
    reals = real_scores if isinstance(real_scores, dict) else {"real": real_scores}
    real_files = real_paths if isinstance(real_paths, dict) else {"real": real_paths}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "csv": out / "results.csv", "scores": out / "scores.csv"}
    files["json"].write_text(json.dumps(result, indent=2, default=str) + "\n")
    with files["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        head = ["perturbation", "real", "generator", "n_real", "n_fake", *METRIC_KEYS, "positive_class", "threshold"]
        w.writerow(head)
        blocks = [("clean", result), *((p["perturbation"], p) for p in result.get("perturbed", []))]
        for label, block in blocks:
            for r in block["rows"]:
                n = ["" if r[k] is None else r[k] for k in ("n_real", "n_fake")]
                metrics = [f"{r[m]:.6f}" for m in METRIC_KEYS]
                tail = [result["positive_class"], f"{result['threshold']:.9g}"]
                w.writerow([label, r["real"], r["generator"], *n, *metrics, *tail])
    with files["scores"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "set", "path", "score", "predicted"])
        sets = [("real", n, real_files[n], reals[n]) for n in reals]
        sets += [("fake", n, fake_paths[n], fake_scores[n]) for n in fake_scores]
        for cls, name, paths, scores in sets:
            for p, s, d in zip(paths, scores, detector.decide(scores)):
                w.writerow([cls, name, str(p), f"{s:.9g}", "fake" if d else "real"])
    pooled = np.concatenate([np.asarray(s, dtype=np.float64) for s in reals.values()])
    title = f"{result['detector']} detector"
    curves = {n: (fakeness(detector, pooled), fakeness(detector, s)) for n, s in fake_scores.items()}
    files["roc"] = plot_roc(curves, out / "roc.png", title=title)
    files["histograms"] = plot_histograms(
        reals,
        fake_scores,
        out / "histograms.png",
        threshold=result["threshold"],
        score_name=result["score"],
        title=f"{title} (calls fake: {'below' if detector.positive_class == 'real' else 'above'} the threshold)",
    )
    return files
