"""`bfdkern evaluate` end to end: every metric per real source and generator, several real sources, the paper's
table in three formats, the robustness sweep, the files of each class and the format shortcut warning, test
images from the fit set refused, unreadable images skipped."""

import csv
import io
import json

import numpy as np
import pytest

from bfdkern.detect.metrics import METRIC_KEYS
from tests.detect.cli import common, run_cli


def _evaluate(world, detector, out, *extra):
    argv = ["evaluate", "--detector", detector, "--fake", f"resynth={world / 'fake'}"]
    argv += ["--fake", f"clean={world / 'fake2'}", "--out", out, *extra, *common(world)]
    return argv


def test_one_real_folder_as_before(world, oneclass_file, capsys, tmp_path):
    out = tmp_path / "eval"
    code, stdout, err = run_cli(capsys, _evaluate(world, oneclass_file, out, "--real", world / "real_test"))
    assert code == 0, err
    assert "positive class of the score: real" in stdout and "fake = positive class" in stdout
    result = json.loads((out / "results.json").read_text())
    assert [r["generator"] for r in result["rows"]] == ["resynth", "clean", "mean"]
    assert result["real_sources"] == ["real"] and result["rows"][0]["n_real"] == 12
    for m in METRIC_KEYS:
        assert result["mean"][m] == pytest.approx(np.mean([r[m] for r in result["rows"][:2]]))
    with (out / "results.csv").open() as f:
        assert [r["generator"] for r in csv.DictReader(f)] == ["resynth", "clean", "mean"]
    with (out / "scores.csv").open() as f:
        assert sum(1 for _ in csv.DictReader(f)) == 12 + 16 + 12
    for png in ("roc.png", "histograms.png", "comparison.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    overview = json.loads((out / "evaluation.json").read_text())
    assert set(overview["metrics"]) == set(METRIC_KEYS) and overview["skipped"]["count"] == 0
    assert overview["files"]["real:real"]["formats"] == {"JPEG": 1.0}


def test_several_real_sources_are_kept_apart_and_averaged(world, oneclass_file, capsys, tmp_path):
    """--real given twice used to keep only the last folder."""
    out = tmp_path / "eval"
    reals = ["--real", world / "real_test", "--real", f"other={world / 'real_b'}"]
    code, stdout, err = run_cli(capsys, _evaluate(world, oneclass_file, out, *reals))
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    assert result["real_sources"] == ["real_test", "other"]
    rows = {(r["real"], r["generator"]): r for r in result["rows"]}
    assert rows[("real_test", "resynth")]["n_real"] == 12 and rows[("other", "resynth")]["n_real"] == 10
    for m in METRIC_KEYS:
        expected = np.mean([rows[(s, g)][m] for s in ("real_test", "other") for g in ("resynth", "clean")])
        assert rows[("mean", "mean")][m] == pytest.approx(expected)
    assert "real: real_test" in stdout and "real: other" in stdout and "mean over the real sources" in stdout
    code, _, err = run_cli(
        capsys, _evaluate(world, oneclass_file, out, "--real", world / "real_b", "--real", world / "real_b")
    )
    assert code == 2 and "given twice" in err


def test_paper_table_formats_and_the_robustness_sweep(world, oneclass_file, capsys, tmp_path):
    out = tmp_path / "eval"
    extra = ["--real", world / "real_test", "--perturb", "jpeg=75", "--perturb", "blur=1+resize=0.5", "--table", "csv"]
    code, stdout, err = run_cli(capsys, _evaluate(world, oneclass_file, out, *extra, "--metrics", "all"))
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [r["perturbation"] for r in table] == ["clean", "jpeg=75", "blur=1+resize=0.5"]  # the clean one first
    assert list(table[0])[3:6] == ["resynth AUC", "resynth AP(fake+)", "resynth AP(real+)"]
    assert list(table[0])[-1] == "mean TPR@1%FPR"
    assert (out / "table.csv").read_text() in stdout  # the chosen format is printed
    result = json.loads((out / "results.json").read_text())
    perturbed = {p["perturbation"]: p for p in result["perturbed"]}
    assert list(perturbed) == ["jpeg=75", "blur=1+resize=0.5"]
    assert float(table[1]["mean AUC"]) == round(100 * perturbed["jpeg=75"]["mean"]["auc"], 2)
    assert float(table[0]["mean AUC"]) == round(100 * result["mean"]["auc"], 2)
    assert perturbed["blur=1+resize=0.5"]["rows"][0]["auc"] != result["rows"][0]["auc"]  # it changed the images
    md = (out / "table.md").read_text()
    assert "**clean**" in md and "**jpeg=75**" in md and "| method |" in md
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    with (out / "results.csv").open() as f:
        assert {r["perturbation"] for r in csv.DictReader(f)} == {"clean", "jpeg=75", "blur=1+resize=0.5"}
    code, _, err = run_cli(
        capsys, _evaluate(world, oneclass_file, out, "--real", world / "real_test", "--perturb", "jpeg")
    )
    assert code == 2 and "KIND=VALUE" in err


def test_the_same_perturbed_images_give_the_same_numbers(world, oneclass_file, capsys, tmp_path):
    """Deterministic: a seeded noise sweep run twice (without the cache) gives identical results."""
    results = []
    for name in ("a", "b"):
        argv = _evaluate(world, oneclass_file, tmp_path / name, "--real", world / "real_test", "--perturb", "noise=3")
        code, _, err = run_cli(capsys, [*argv, "--no-cache", "--perturb-seed", "5"])
        assert code == 0, err
        results.append(json.loads((tmp_path / name / "results.json").read_text())["perturbed"])
    assert results[0] == results[1]


def test_format_shortcut_is_reported(world, oneclass_file, capsys, tmp_path):
    code, stdout, err = run_cli(capsys, _evaluate(world, oneclass_file, tmp_path / "e", "--real", world / "real_test"))
    assert code == 0, err
    assert "real (real)" in stdout and "JPEG 100%" in stdout and "PNG 100%" in stdout
    assert "warning: real vs resynth: real is 100% JPEG, resynth is 100% PNG" in err
    assert "format shortcut" in err


def test_test_images_from_the_fit_set_are_refused(world, oneclass_file, capsys, tmp_path):
    """The reported failure: a test set overlapping the fit set gave AUC 100% without a word."""
    out = tmp_path / "eval"
    code, _, err = run_cli(capsys, _evaluate(world, oneclass_file, out, "--real", world / "real"))
    assert code == 2
    assert "24 test images are in the fit set of detector oc (same file content): real (real): 24" in err
    assert "--allow-overlap" in err and not (out / "results.json").exists()
    code, _, err = run_cli(capsys, _evaluate(world, oneclass_file, out, "--real", world / "real", "--allow-overlap"))
    assert code == 0 and "(--allow-overlap)" in err
    overlap = json.loads((out / "evaluation.json").read_text())["overlap_with_fit_sets"]
    assert len(overlap["oc"]) == 24


def test_unreadable_test_images_are_skipped(world, oneclass_file, capsys, tmp_path):
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for p in sorted((world / "fake").glob("*.png"))[:6]:
        (fakes / p.name).write_bytes(p.read_bytes())
    (fakes / "broken.png").write_bytes((world / "fake" / "gen_00000.png").read_bytes()[:100])
    argv = ["evaluate", "--detector", oneclass_file, "--real", world / "real_test", "--fake", f"g={fakes}"]
    code, _, err = run_cli(capsys, [*argv, "--out", tmp_path / "e", *common(world)])
    assert code == 0, err
    assert "skipped 1 (truncated or corrupt: 1) of 19 images" in err and "broken.png" in err
    result = json.loads((tmp_path / "e" / "results.json").read_text())
    assert result["rows"][0]["n_fake"] == 6
    code, _, _ = run_cli(capsys, [*argv, "--out", tmp_path / "e", "--strict", *common(world)])
    assert code == 3


def test_several_detectors_are_rows_of_one_table(world, oneclass_file, capsys, tmp_path):
    second = tmp_path / "diag.npz"
    fit = ["fit-oneclass", "--encoder", world / "run", "--real", world / "real", "-o", second]
    assert run_cli(capsys, [*fit, "--components", "1", "--covariance", "diag", *common(world)])[0] == 0
    out = tmp_path / "eval"
    argv = _evaluate(world, f"full={oneclass_file}", out, "--real", world / "real_test", "--detector", f"diag={second}")
    code, stdout, err = run_cli(capsys, argv)
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [r["method"] for r in table] == ["full", "diag"]
    for name in ("full", "diag"):
        result = json.loads((out / name / "results.json").read_text())
        row = next(r for r in table if r["method"] == name)
        assert float(row["mean AUC"]) == round(100 * result["mean"]["auc"], 2)
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_shared_faces_against_generated_pngs(world, oneclass_file, shared_data, capsys, tmp_path):
    """Real camera photos (JPEG, varied sizes) against 32x32 PNG fakes: the small-fit warning, the files report
    and the format warning on real files; a fit on some of the photos refuses them as test images."""
    faces = shared_data / "faces" / "faces_with_exif"
    photos = sorted(faces.glob("*.jpg"))[:10]
    if len(photos) < 10:
        pytest.skip("too few shared face photos")
    fit_dir, test_dir = tmp_path / "fit", tmp_path / "test"
    fit_dir.mkdir()
    test_dir.mkdir()
    for i, p in enumerate(photos):
        (fit_dir if i < 6 else test_dir).joinpath(p.name).symlink_to(p)
    test_dir.joinpath(photos[0].name).symlink_to(photos[0])  # one fit photo among the test photos
    det = tmp_path / "faces.npz"
    fit = ["fit-oneclass", "--encoder", world / "run", "--real", fit_dir, "-o", det, "--components", "1"]
    code, _, err = run_cli(capsys, [*fit, "--covariance", "spherical", *common(world)])
    assert code == 0 and "too small for a 1-component spherical-covariance mixture" in err  # 6 photos, 10 needed
    argv = ["evaluate", "--detector", det, "--real", test_dir, "--fake", f"nocam={world / 'fake'}"]
    code, stdout, err = run_cli(capsys, [*argv, "--out", tmp_path / "e", *common(world)])
    assert code == 2 and "1 test images are in the fit set of detector faces" in err and photos[0].name in err
    code, stdout, err = run_cli(capsys, [*argv, "--out", tmp_path / "e", "--allow-overlap", *common(world)])
    assert code == 0, err
    assert "real is 100% JPEG, nocam is 100% PNG" in err
    files = json.loads((tmp_path / "e" / "evaluation.json").read_text())["files"]
    assert files["real:real"]["jpeg_quality_median"] is not None and files["fake:nocam"]["most_common_size"] == "32x32"
