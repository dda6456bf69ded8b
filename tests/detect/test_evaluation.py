"""evaluate_scores: every metric per real source and generator with fake as the positive class whatever the
detector's score means, the means over generators and over sources, the text table and the written files."""

import csv
import json

import numpy as np
import pytest
from sklearn import metrics as skm

from bfdkern.detect.evaluation import MEAN, evaluate_scores, format_table, write_results
from bfdkern.detect.metrics import METRIC_KEYS, METRIC_LABELS


class OneClassLike:
    """Scores are log-likelihoods (real = high); fake below the threshold."""

    kind, positive_class, score_name, threshold = "oneclass", "real", "log-likelihood", 0.0

    def decide(self, scores):
        return (np.asarray(scores) < self.threshold).astype(int)


class BinaryLike:
    kind, positive_class, score_name, threshold = "binary", "fake", "P(fake)", 0.5

    def decide(self, scores):
        return (np.asarray(scores) > self.threshold).astype(int)


def _scores(seed=0):
    rng = np.random.default_rng(seed)
    reals = {"ffhq": rng.normal(1, 1, 40), "celeba": rng.normal(0.5, 1, 25)}
    fakes = {"sd15": rng.normal(-1, 1, 30), "mj5": rng.normal(-0.2, 1, 10)}
    return reals, fakes


def test_cells_use_fake_as_the_positive_class_and_the_detector_s_decision():
    reals, fakes = _scores()
    result = evaluate_scores(OneClassLike(), reals, fakes)
    cell = next(r for r in result["rows"] if r["real"] == "ffhq" and r["generator"] == "sd15")
    real, fake = reals["ffhq"], fakes["sd15"]
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    fakeness = -np.r_[real, fake]  # log-likelihood negated
    assert cell["auc"] == pytest.approx(skm.roc_auc_score(y, fakeness))
    assert cell["ap_fake"] == pytest.approx(skm.average_precision_score(y, fakeness))
    assert cell["ap_real"] == pytest.approx(skm.average_precision_score(1 - y, -fakeness))
    assert cell["real_acc"] == pytest.approx(np.mean(real >= 0)) and cell["fake_acc"] == pytest.approx(
        np.mean(fake < 0)
    )
    assert (cell["n_real"], cell["n_fake"]) == (40, 30)
    # The same numbers from a P(fake)-style detector given the negated scores.
    flipped = evaluate_scores(
        BinaryLike(), {k: 0.5 - v for k, v in reals.items()}, {k: 0.5 - v for k, v in fakes.items()}
    )
    for a, b in zip(result["rows"], flipped["rows"]):
        for m in ("auc", "ap_fake", "ap_real", "eer", "tpr_at_fpr5", "tpr_at_fpr1"):
            assert a[m] == pytest.approx(b[m])


def test_means_over_generators_and_over_sources():
    reals, fakes = _scores(1)
    result = evaluate_scores(OneClassLike(), reals, fakes)
    rows = {(r["real"], r["generator"]): r for r in result["rows"]}
    assert list(rows) == [
        ("ffhq", "sd15"),
        ("ffhq", "mj5"),
        ("ffhq", MEAN),
        ("celeba", "sd15"),
        ("celeba", "mj5"),
        ("celeba", MEAN),
        (MEAN, "sd15"),
        (MEAN, "mj5"),
        (MEAN, MEAN),
    ]
    for m in METRIC_KEYS:
        for s in ("ffhq", "celeba"):
            assert rows[(s, MEAN)][m] == pytest.approx(np.mean([rows[(s, g)][m] for g in fakes]))
        for g in fakes:
            assert rows[(MEAN, g)][m] == pytest.approx(np.mean([rows[(s, g)][m] for s in reals]))
        assert rows[(MEAN, MEAN)][m] == pytest.approx(np.mean([rows[(s, g)][m] for s in reals for g in fakes]))
        assert result["mean"][m] == rows[(MEAN, MEAN)][m]
    single = evaluate_scores(OneClassLike(), reals["ffhq"], fakes)
    assert [r["real"] for r in single["rows"]] == ["real"] * 3 and single["real_sources"] == ["real"]
    text = format_table(result)
    assert "real: ffhq" in text and "mean over the real sources" in text and "TPR@1%FPR" in text


def test_written_files(tmp_path):
    reals, fakes = _scores(2)
    det = OneClassLike()
    result = evaluate_scores(det, reals, fakes)
    paths = {n: [f"{n}/{i}.jpg" for i in range(len(s))] for n, s in reals.items()}
    fpaths = {n: [f"{n}/{i}.png" for i in range(len(s))] for n, s in fakes.items()}
    files = write_results(
        result, tmp_path, real_paths=paths, real_scores=reals, fake_paths=fpaths, fake_scores=fakes, detector=det
    )
    assert json.loads(files["json"].read_text())["rows"][0]["auc"] == pytest.approx(result["rows"][0]["auc"])
    with files["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and rows[0]["perturbation"] == "clean" and rows[-1]["real"] == rows[-1]["generator"] == MEAN
    with files["scores"].open() as f:
        scored = list(csv.DictReader(f))
    assert len(scored) == 40 + 25 + 30 + 10 and {r["class"] for r in scored} == {"real", "fake"}
    for png in ("roc", "histograms"):
        assert files[png].read_bytes()[:4] == b"\x89PNG"


def test_no_generator_or_empty_class_is_named():
    with pytest.raises(ValueError, match="no generator"):
        evaluate_scores(OneClassLike(), np.zeros(3), {})
    with pytest.raises(ValueError, match="sd15: no image could be scored"):
        evaluate_scores(OneClassLike(), np.zeros(3), {"sd15": np.zeros(0)})


def test_histogram_axis_always_reaches_the_threshold_with_plain_ticks(tmp_path, monkeypatch):
    """The reported failure: a threshold far off the scores was dropped; now the axis extends to it."""
    import bfdkern.detect.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: figures.append(fig) or path)
    rng = np.random.default_rng(3)
    real, fake = rng.normal(4530, 2, 200), rng.normal(4520, 2, 100)
    plots.plot_histograms(real, {"sd15": fake}, tmp_path / "h.png", threshold=-12000.0, score_name="log-likelihood")
    ax = figures[0].axes[0]
    lo, hi = ax.get_xlim()
    assert lo < -12000 < hi and hi > 4530
    assert any(line.get_xdata()[0] == -12000.0 for line in ax.lines)  # the threshold line is drawn
    figures[0].canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert 2 <= len(labels) <= 8 and all("e" not in t for t in labels)
    assert ax.xaxis.get_offset_text().get_text() == ""  # no "+4.5e3" offset to decode


def test_comparison_shows_every_metric_with_the_legend_outside_the_bars(tmp_path, monkeypatch):
    import bfdkern.detect.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: figures.append(fig) or path)
    reals, fakes = _scores(4)
    rows = evaluate_scores(OneClassLike(), reals, fakes)["rows"]
    values = {m: {r["generator"]: r for r in rows if r["real"] == MEAN} for m in ("oc", "other")}
    plots.plot_comparison(values, tmp_path / "c.png")
    fig = figures[0]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split(" (")[0] for t in titles] == [METRIC_LABELS[m] for m in METRIC_KEYS]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1  # one legend, on the figure
    fig.canvas.draw()
    legend_box = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        assert not legend_box.overlaps(ax.get_window_extent())
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["sd15", "mj5", "mean"]
