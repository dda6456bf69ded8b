"""Evaluation of a detector against real images and one or more generators' images.

For each generator the real set is scored against that generator's set: AUC, AP and accuracy (at
the detector's own threshold), then the mean over generators, in the paper's convention:

* one-class detector: the score is the log-likelihood and the **positive class is real** (label 1 =
  real); accuracy calls an image real when its score is >= the threshold;
* binary detector: the score is P(fake) and the **positive class is fake** (label 1 = fake); accuracy
  calls an image fake when P(fake) > 0.5.

AUC does not depend on the choice (swapping the class and negating the score gives the same
number); AP does, which is why the convention is recorded next to every result.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from bfdkern.detect.metrics import accuracy, average_precision, roc_auc

METRICS = ("auc", "ap", "accuracy")


def labelled(real_scores, fake_scores, positive_class: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate real then fake scores with labels in the convention: (labels [N], scores [N]), label 1 =
    ``positive_class`` ("real" or "fake")."""
    if positive_class not in ("real", "fake"):
        raise ValueError(f"positive_class must be 'real' or 'fake', got {positive_class!r}")
    real = np.asarray(real_scores, dtype=np.float64)
    fake = np.asarray(fake_scores, dtype=np.float64)
    real_label = 1 if positive_class == "real" else 0
    labels = np.r_[np.full(len(real), real_label), np.full(len(fake), 1 - real_label)].astype(np.int64)
    return labels, np.r_[real, fake]


def evaluate_scores(detector, real_scores, fake_scores: dict[str, np.ndarray]) -> dict:
    """Metrics per generator and their mean.

    Args:
        detector: a fitted detector (gives ``positive_class``, ``score_name``, ``threshold``, ``decide``).
        real_scores: [Nr] the detector's scores of the real images.
        fake_scores: generator name -> [Nf] scores of its images.

    Returns:
        ``{"detector", "positive_class", "score", "threshold", "rows": [{generator, n_real, n_fake, auc, ap,
        accuracy}], "mean": {auc, ap, accuracy}}``; metrics are fractions in [0, 1].
    """
    if not fake_scores:
        raise ValueError("no generator to evaluate against (give at least one --fake NAME=DIR)")
    pos = detector.positive_class
    rows = []
    for name, fake in fake_scores.items():
        labels, scores = labelled(real_scores, fake, pos)
        is_fake = detector.decide(scores)
        predicted = (1 - is_fake) if pos == "real" else is_fake
        rows.append(
            {
                "generator": name,
                "n_real": int(len(real_scores)),
                "n_fake": int(len(fake)),
                "auc": roc_auc(labels, scores),
                "ap": average_precision(labels, scores),
                "accuracy": accuracy(labels, predicted),
            }
        )
    mean = {m: float(np.mean([r[m] for r in rows])) for m in METRICS}
    return {
        "detector": detector.kind,
        "positive_class": pos,
        "score": detector.score_name,
        "threshold": float(detector.threshold),
        "rows": rows,
        "mean": mean,
    }


def format_table(result: dict) -> str:
    """The result as a fixed-width text table, metrics in percent, with the convention in a header line."""
    lines = [
        f"{result['detector']} detector; score = {result['score']}; positive class = {result['positive_class']}; "
        f"threshold = {result['threshold']:.6g}",
    ]
    width = max(len("generator"), len("mean"), *(len(r["generator"]) for r in result["rows"]))
    head = f"{'generator':<{width}}  {'n_real':>6}  {'n_fake':>6}  {'AUC %':>6}  {'AP %':>6}  {'Acc %':>6}"
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(
            f"{r['generator']:<{width}}  {r['n_real']:>6}  {r['n_fake']:>6}  {100 * r['auc']:6.2f}  "
            f"{100 * r['ap']:6.2f}  {100 * r['accuracy']:6.2f}"
        )
    m = result["mean"]
    lines.append("-" * len(head))
    lines.append(
        f"{'mean':<{width}}  {'':>6}  {'':>6}  {100 * m['auc']:6.2f}  {100 * m['ap']:6.2f}  {100 * m['accuracy']:6.2f}"
    )
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
    """Write ``results.json``, ``results.csv`` (one row per generator plus ``mean``), ``scores.csv`` (one row
    per image), ``roc.png`` and ``histograms.png`` into ``out_dir``. Returns name -> path."""
    from bfdkern.detect.plots import plot_histograms, plot_roc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "csv": out / "results.csv", "scores": out / "scores.csv"}
    files["json"].write_text(json.dumps(result, indent=2) + "\n")
    with files["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["generator", "n_real", "n_fake", *METRICS, "positive_class", "threshold"])
        for r in result["rows"]:
            w.writerow(
                [
                    r["generator"],
                    r["n_real"],
                    r["n_fake"],
                    *(f"{r[m]:.6f}" for m in METRICS),
                    result["positive_class"],
                    f"{result['threshold']:.9g}",
                ]
            )
        w.writerow(
            [
                "mean",
                "",
                "",
                *(f"{result['mean'][m]:.6f}" for m in METRICS),
                result["positive_class"],
                f"{result['threshold']:.9g}",
            ]
        )
    with files["scores"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "path", "score", "predicted"])
        sets = [("real", real_paths, real_scores), *((n, fake_paths[n], fake_scores[n]) for n in fake_scores)]
        for name, paths, scores in sets:
            for p, s, d in zip(paths, scores, detector.decide(scores)):
                w.writerow([name, str(p), f"{s:.9g}", "fake" if d else "real"])
    pos = result["positive_class"]
    curves = {n: labelled(real_scores, s, pos) for n, s in fake_scores.items()}
    title = f"{result['detector']} detector (positive class: {pos})"
    files["roc"] = plot_roc(curves, out / "roc.png", positive_class=pos, title=title)
    files["histograms"] = plot_histograms(
        real_scores,
        fake_scores,
        out / "histograms.png",
        threshold=result["threshold"],
        score_name=result["score"],
        title=title,
    )
    return files
