"""The fit and detect commands end to end on the camera simulator's images: what they record and report, the
fit warnings, unreadable images skipped with their reasons, and errors on bad inputs."""

import json

import numpy as np

from bfdkern.detect import load_detector
from tests.detect.cli import common as _common
from tests.detect.cli import run_cli as _run


def test_fit_oneclass_records_encoder_preprocessing_and_fit_set(world, oneclass_file):
    import hashlib

    det, header = load_detector(oneclass_file)
    assert det.kind == "oneclass" and det.report["n_real"] == 24
    assert header["encoder"]["source"].endswith("run/encoder.pt") and header["encoder"]["config"]["backbone"] == "small"
    # The input size follows the encoder's pretraining when --size is not given.
    assert det.preprocessing.size == 32 and det.preprocessing.jpeg_quality == 95 and not det.preprocessing.face_crop
    assert header["params"]["n_components"] == 2 and header["params"]["init_params"] == "k-means++"
    assert header["preprocessing"]["pipeline"] == 2
    assert det.fit_hashes == {hashlib.sha256(p.read_bytes()).hexdigest() for p in (world / "real").glob("*.jpg")}
    assert det.report["threshold_set_on"] == "the fit set (in-sample)"
    assert (world / "oc.scores.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_oneclass_warns_small_fit_sets_and_in_sample_thresholds(world, capsys, tmp_path):
    """The reported failure: a 10-component full mixture on a few images in 768 dimensions, no word said."""
    fit = ["fit-oneclass", "--encoder", world / "run", "--real", world / "real", "-o", tmp_path / "a.npz"]
    code, out, err = _run(capsys, [*fit, "--components", "10", *_common(world)])
    assert code == 0, err
    assert "warning: the fit set is too small for a 10-component full-covariance mixture in 768 dimensions" in err
    assert "24 images are 2.4 per component" in err and "--components 2 --covariance diag" in err
    assert "warning: the threshold is set in-sample" in err and "--calibration 0.2" in err
    # A held-out calibration set: no in-sample warning; the threshold is set on it; --false-alarm is the rate.
    fit[-1] = tmp_path / "b.npz"
    options = ["--components", "1", "--covariance", "diag", "--calibration", "0.25", "--false-alarm", "0.1"]
    code, out, err = _run(capsys, [*fit, *options, *_common(world)])
    assert code == 0 and "warning" not in err, err
    assert "at 10.0% false alarms on 6 held-out calibration reals" in out
    det, _ = load_detector(tmp_path / "b.npz")
    assert det.report["n_real"] == 18 and det.report["n_calibration"] == 6 and det.params["false_alarm_rate"] == 0.1
    assert len(det.fit_hashes) == 24  # the calibration images are in the fit set too: no test may reuse them
    # A calibration folder.
    fit[-1] = tmp_path / "c.npz"
    code, out, err = _run(capsys, [*fit, "--components", "1", "--calibration", world / "real_b", *_common(world)])
    assert code == 0 and "10 held-out calibration reals" in out
    code, _, err = _run(capsys, [*fit, "--calibration", "1.5", *_common(world)])
    assert code == 2 and "--calibration 1.5" in err


def test_fit_commands_skip_unreadable_images_and_strict_says_so(world, capsys, tmp_path):
    folder = tmp_path / "reals"
    folder.mkdir()
    for p in sorted((world / "real").glob("*.jpg"))[:12]:
        (folder / p.name).write_bytes(p.read_bytes())
    data = (world / "real" / "cam_00000.jpg").read_bytes()
    (folder / "cam_cut.jpg").write_bytes(data[: len(data) * 3 // 4])
    (folder / "cam_text.png").write_text("not an image")
    fit = ["fit-oneclass", "--encoder", world / "run", "--real", folder, "-o", tmp_path / "x.npz", "--components", "1"]
    code, out, err = _run(capsys, [*fit, *_common(world)])
    assert code == 0, err
    assert "skipped 2 (truncated or corrupt: 1, not an image: 1) of 14 images" in err and "Traceback" not in err
    det, _ = load_detector(tmp_path / "x.npz")
    assert det.report["n_real"] == 12 and det.report["skipped"]["count"] == 2 and len(det.fit_hashes) == 12
    code, _, err = _run(capsys, [*fit, "--strict", *_common(world)])
    assert code == 3 and (tmp_path / "x.npz").is_file()
    fit_binary = ["fit-binary", "--encoder", world / "run", "--real", folder, "--fake", world / "fake"]
    fit_binary += ["-o", tmp_path / "b.npz", "--hidden", "8", "--epochs", "3", "--strict", *_common(world)]
    code, out, err = _run(capsys, fit_binary)
    assert code == 3 and "skipped 2" in err and (tmp_path / "b.npz").is_file()


def test_fit_binary_reports_its_validation_curve(world, capsys, tmp_path):
    argv = ["fit-binary", "--encoder", world / "run", "--real", world / "real", "--fake", world / "fake"]
    argv += ["-o", tmp_path / "b.npz", "--hidden", "16", "--epochs", "200", "--patience", "3", *_common(world)]
    code, out, err = _run(capsys, argv)
    assert code == 0, err
    assert "epoch  train loss  val loss  val AUC %" in out and "<- kept" in out
    det, _ = load_detector(tmp_path / "b.npz")
    r = det.report
    assert r["stopped_early"] and f"stopped early after {r['epochs']} epochs; kept epoch {r['best_epoch']}" in out
    assert len(r["history"]) == r["epochs"] + 1
    assert (tmp_path / "b.curve.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_binary_reports_the_fakes_it_used(world, capsys):
    path = world / "bin.npz"
    code, out, err = _run(
        capsys,
        [
            "fit-binary",
            "--encoder",
            world / "run",
            "--real",
            world / "real",
            "--fake",
            world / "fake",
            "-o",
            path,
            "--max-fakes",
            "10",
            "--hidden",
            "32",
            "--epochs",
            "5",
            "--size",
            "32",
            *_common(world),
        ],
    )
    assert code == 0, err
    assert "used 24 real and 10 fake images (of 16 found)" in out
    det, _ = load_detector(path)
    assert det.report["n_fake_train"] + det.report["n_fake_val"] == 10 and det.report["n_fake_found"] == 16


def test_detect_json_and_table(world, oneclass_file, capsys):
    code, out, err = _run(
        capsys,
        [
            "detect",
            world / "fake2",
            world / "real_test" / "cam_00000.jpg",
            "--detector",
            oneclass_file,
            "--json",
            *_common(world),
        ],
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 13 and {r["label"] for r in rows} <= {"real", "fake"}
    det, _ = load_detector(oneclass_file)
    assert all(r["threshold"] == det.threshold and r["detector"] == "oneclass" for r in rows)
    assert all((r["label"] == "fake") == (r["score"] < r["threshold"]) for r in rows)
    code, out, err = _run(capsys, ["detect", world / "real_test", "--detector", oneclass_file, *_common(world)])
    assert code == 0 and "score = log-likelihood" in out and len(out.splitlines()) == 2 + 12
    assert "scored 12 images, skipped 0" in err


def test_unnormalised_embedding_detector_fits_detects_and_evaluates(world, capsys, tmp_path):
    """Zou25's detector from the command line: --encoder embedding:RUN --no-normalize; detect and evaluate
    reload the same un-normalised encoder from the file; the normalised encoder is refused for it."""
    path = tmp_path / "raw.npz"
    fit = ["fit-oneclass", "--encoder", f"embedding:{world / 'run'}", "--real", world / "real", "-o", path]
    code, out, err = _run(capsys, [*fit, "--components", "2", "--no-normalize", *_common(world)])
    assert code == 0, err
    assert "768-d features, not normalised" in out
    det, header = load_detector(path)
    assert header["encoder"]["source"] == f"embedding:{(world / 'run' / 'encoder.pt').resolve()}"
    assert header["encoder"]["config"]["features"] == "embedding" and det.params["normalize"] is False
    assert det.preprocessing.size == 32  # the pretraining's size, as for the normalised encoder
    norms = np.linalg.norm(det.means, axis=1)
    assert np.abs(norms - 1).max() > 0.05  # fitted on the embedding's own scale

    code, out, err = _run(capsys, ["detect", world / "fake2", "--detector", path, "--json", *_common(world)])
    assert code == 0, err
    assert len(out.splitlines()) == 12
    out_dir = tmp_path / "eval"
    argv = ["evaluate", "--detector", path, "--real", world / "real_test", "--fake", f"nocam={world / 'fake'}"]
    code, _, err = _run(capsys, [*argv, "--out", out_dir, *_common(world)])
    assert code == 0, err
    assert (out_dir / "results.csv").is_file()
    code, _, err = _run(capsys, ["detect", world / "fake2", "--detector", path, "--encoder", world / "run"])
    assert code == 2 and "fitted on features of encoder" in err
    # --no-normalize on a run's (already unit) features says what to use instead.
    fit = ["fit-oneclass", "--encoder", world / "run", "--real", world / "real", "-o", tmp_path / "same.npz"]
    code, _, err = _run(capsys, [*fit, "--components", "2", "--no-normalize", *_common(world)])
    assert code == 0 and "--no-normalize changes nothing" in err and "--encoder embedding:" in err


def test_empty_folder_is_named(world, capsys):
    code, _, err = _run(
        capsys,
        ["fit-oneclass", "--encoder", world / "run", "--real", world / "empty", "-o", world / "x.npz", *_common(world)],
    )
    assert code == 2 and f"{world / 'empty'}: no images found" in err


def test_detector_with_another_encoder_is_refused(world, oneclass_file, capsys):
    code, _, err = _run(
        capsys,
        ["detect", world / "fake2", "--detector", oneclass_file, "--encoder", world / "other_run", *_common(world)],
    )
    assert code == 2
    assert f"{oneclass_file}: fitted on features of encoder" in err and "other_run" in err


def test_missing_inputs(world, oneclass_file, capsys, tmp_path):
    code, _, err = _run(capsys, ["detect", tmp_path / "nope.png", "--detector", oneclass_file, *_common(world)])
    assert code == 2 and "nope.png: no such image file or folder" in err
    code, _, err = _run(capsys, ["detect", world / "fake2", "--detector", tmp_path / "nope.npz", *_common(world)])
    assert code == 2 and "nope.npz: no such detector file" in err
    code, _, err = _run(
        capsys,
        [
            "evaluate",
            "--detector",
            oneclass_file,
            "--real",
            world / "real_test",
            "--fake",
            "nodir",
            "--out",
            tmp_path,
            *_common(world),
        ],
    )
    assert code == 2 and "expected NAME=DIR" in err
