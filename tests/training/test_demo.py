"""`bfdkern demo` on a tiny budget: it simulates the data, pretrains with bi-level lambda, checks the pretext
tasks against their chance levels, fits both detectors and reports AUCs and where its plots are."""

import json
from pathlib import Path

import numpy as np
import pytest

from bfdkern import cli
from bfdkern.recipes.demo import MARKER, DemoSettings, prepare_folder, run_demo

TINY = DemoSettings(
    train_photos=48,
    fit_photos=24,
    test_photos=16,
    fake_images=16,
    image_size=32,
    batch_size=16,
    epochs=1,
    feature_dim=16,
    components=1,
    eval_samples=32,
    workers=0,
)


def test_tiny_demo(tmp_path):
    lines = []
    out = tmp_path / "demo"
    result = run_demo(out, TINY, echo=lines.append, progress=False)
    text = "\n".join(lines)
    assert result.steps == 6 and len(result.tasks) == 11
    for values in (result.loss_before, result.loss_after, result.chance):
        assert np.isfinite(values).all()
    assert result.lambda_after != result.lambda_before  # lambda moved
    assert 0 <= result.auc <= 1 and 0 <= result.auc_random_init <= 1 and 0 <= result.binary_auc <= 1
    assert result.step_rate > 0 and result.loader_rate > 0
    for needle in ("chance", "after/chance", "one-class", "binary MLP", "AUC", "steps/s", "batches/s", "lr 0.002"):
        assert needle in text, needle
    assert set(result.plots) == {"lambda", "losses", "roc", "histogram"}
    for name, path in result.plots.items():
        assert path.read_bytes()[:4] == b"\x89PNG" and str(path) in text, name
    saved = json.loads((out / MARKER).read_text())
    assert saved["status"] == "done" and saved["auc"] == pytest.approx(result.auc)
    assert (out / "run" / "encoder.pt").is_file()


def test_demo_folder_rules(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and holds no earlier demo"):
        prepare_folder(other)
    assert (other / "thesis.tex").is_file()
    demo = tmp_path / "demo"
    prepare_folder(demo)
    (demo / "run").mkdir()
    (demo / "run" / "old.csv").write_text("x")
    prepare_folder(demo)  # an earlier demo is replaced
    assert not (demo / "run").exists() and (demo / MARKER).is_file()


def test_command_line(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.txt").write_text("a")
    assert cli.main(["demo", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "holds no earlier demo" in capsys.readouterr().err


@pytest.mark.slow
def test_full_demo_learns_the_tasks_and_detects_camera_less_faces(tmp_path):
    """The README's main job at its defaults: the outer task l_1 is learned, lambda moves, and the
    pretrained encoder separates camera photos from camera-less faces (identically preprocessed)
    clearly better than the same encoder at random initialisation."""
    result = run_demo(tmp_path / "demo", DemoSettings(), echo=lambda line: None, progress=False)
    chance = np.asarray(result.chance)
    after = np.asarray(result.loss_after)
    learned = after <= 0.95 * chance
    assert learned.sum() >= 7, dict(zip(result.tasks, (after / chance).round(2)))
    outer = [result.tasks.index(name) for name in result.outer_tasks]
    assert learned[outer].all(), "the outer task l_1 stays at chance"
    moved = np.abs(np.asarray(result.lambda_after) - np.asarray(result.lambda_before))
    assert moved.max() > 0.5
    assert result.auc >= 0.65 and result.auc >= result.auc_random_init + 0.08, (result.auc, result.auc_random_init)


def test_report_says_which_unlearned_tasks_the_outer_objective_turned_down():
    from bfdkern.recipes.demo import DemoResult, report

    result = DemoResult(
        out_dir=Path("demo"),
        settings=DemoSettings(),
        auc=0.8,
        ap=0.8,
        auc_random_init=0.6,
        binary_auc=0.9,
        binary_auc_random_init=0.7,
        tasks=["iso", "metering_mode", "exposure_mode", "manipulated"],
        outer_tasks=["manipulated"],
        loss_before=[0.25, 0.46, 0.17, 0.29],
        loss_after=[0.15, 0.27, 0.085, 0.13],
        chance=[0.25, 0.26, 0.081, 0.29],
        lambda_before=[1.0, 1.0, 1.0, 1.0],
        lambda_after=[0.8, 0.05, 1.3, 4.7],
        steps=10,
        step_rate=1.0,
        loader_rate=2.0,
        data_wait_fraction=0.1,
        data_wait_median=0.001,
        step_median=0.5,
    )
    text = report(result)
    assert "2 of 4 tasks learned" in text
    assert "not learned within this budget: metering_mode, exposure_mode" in text
    assert "turned down lambda of metering_mode 1.00 -> 0.05" in text and "exposure_mode 1.00" not in text
