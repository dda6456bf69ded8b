"""`bfdkern ablate`: several presets pretrained, fitted and evaluated on the same images, one comparison table."""

import csv

import numpy as np
import pytest

from bfdkern import cli
from bfdkern.detect import load_detector

TINY = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--backbone", "small", "--feature-dim", "8"]
TINY += ["--lr", "2e-3", "--lambda-lr", "1e-2", "--workers", "0", "--device", "cpu", "--quiet", "--max-steps", "3"]


def _ablate(photos, eval_sets, out, presets):
    return cli.main(
        [
            "ablate",
            *("--data", str(photos), "--fit", str(eval_sets / "fit"), "--real", str(eval_sets / "real")),
            *("--fake", f"nocam={eval_sets / 'fake'}", "--out", str(out), "--presets", presets, *TINY),
        ]
    )


def test_presets_side_by_side(photos, eval_sets, tmp_path, capsys):
    out = tmp_path / "ablate"
    assert _ablate(photos, eval_sets, out, "equal-lambda,no-region,zou25") == 0
    printed = capsys.readouterr().out
    with open(out / "ablations.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["preset"] for r in rows] == ["equal-lambda", "no-region", "zou25"]
    assert [int(r["tasks"]) for r in rows] == [11, 10, 5]
    assert [r["lambda"] for r in rows] == ["fixed", "bi-level every 1", "fixed"]
    for r in rows:
        assert 0 <= float(r["auc"]) <= 1 and float(r["auc"]) == float(r["auc_nocam"])
        assert r["preset"] in printed
    assert (out / "ablations.png").read_bytes()[:4] == b"\x89PNG"
    zou, _ = load_detector(out / "zou25" / "oneclass.npz")
    assert zou.params["n_components"] == 12 and zou.params["normalize"] is False
    # Unnormalised embeddings: the mixture means are not unit vectors.
    assert np.abs(np.linalg.norm(zou.means, axis=1) - 1).max() > 1e-3
    # The preset's detector file names its un-normalised encoder: `bfdkern evaluate` reloads it alone.
    assert zou.encoder["source"].startswith("embedding:")
    argv = ["evaluate", "--detector", str(out / "zou25" / "oneclass.npz"), "--real", str(eval_sets / "real")]
    argv += ["--fake", f"nocam={eval_sets / 'fake'}", "--out", str(tmp_path / "eval"), "--quiet", "--device", "cpu"]
    assert cli.main(argv) == 0
    with open(tmp_path / "eval" / "results.csv") as f:
        assert float(next(csv.DictReader(f))["auc"]) == pytest.approx(float(rows[2]["auc"]), abs=1e-6)
    blades, _ = load_detector(out / "no-region" / "oneclass.npz")
    assert blades.params["normalize"] is True and np.allclose(np.linalg.norm(blades.means, axis=1), 1, atol=0.2)

    # Run again: the finished runs are reused, not retrained, and give the same numbers.
    assert _ablate(photos, eval_sets, out, "zou25") == 0
    assert "reusing the finished run" in capsys.readouterr().out
    with open(out / "ablations.csv") as f:
        assert float(next(csv.DictReader(f))["auc"]) == float(rows[2]["auc"])


def test_bad_input_is_named(photos, eval_sets, tmp_path, capsys):
    assert _ablate(photos, eval_sets, tmp_path / "a", "blades,bogus") == 2
    assert "unknown preset 'bogus'" in capsys.readouterr().err
    assert _ablate(photos / "nothing", eval_sets, tmp_path / "a", "blades") == 2
    assert "no such photo folder" in capsys.readouterr().err
