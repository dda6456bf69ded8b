"""The detection commands end to end on the camera simulator's images, and their errors on bad inputs."""

import csv
import json

import numpy as np
import pytest
import torch

from bfdkern.cli import main
from bfdkern.data.simulator import simulate_collection, simulate_uncamera
from bfdkern.detect import load_detector
from bfdkern.models import BladesModel, save_model
from bfdkern.tasks import blades_spec


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect_cli")
    simulate_collection(root / "real", 24, seed=0, size=32)
    simulate_collection(root / "real_test", 12, seed=1, size=32)
    simulate_uncamera(root / "fake", 16, seed=2, size=32)
    simulate_uncamera(root / "fake2", 12, seed=3, size=32, kinds=("clean",))
    for seed, name in ((0, "run"), (1, "other_run")):
        torch.manual_seed(seed)
        model = BladesModel(blades_spec(), backbone="small", feature_dim=768)
        save_model(root / name / "encoder.pt", model, extra={"pretrain_config": {"image_size": 32, "face_crop": False}})
    (root / "empty").mkdir()
    return root


def _common(root):
    return ["--cache-dir", str(root / "cache"), "--quiet", "--device", "cpu"]


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def oneclass_file(world):
    path = world / "oc.npz"
    assert (
        main(
            [
                "fit-oneclass",
                "--encoder",
                str(world / "run"),
                "--real",
                str(world / "real"),
                "-o",
                str(path),
                "--components",
                "2",
                *_common(world),
            ]
        )
        == 0
    )
    return path


def test_fit_oneclass_records_encoder_and_preprocessing(world, oneclass_file):
    det, header = load_detector(oneclass_file)
    assert det.kind == "oneclass" and det.report["n_real"] == 24
    assert header["encoder"]["source"].endswith("run/encoder.pt") and header["encoder"]["config"]["backbone"] == "small"
    # The input size follows the encoder's pretraining when --size is not given.
    assert det.preprocessing.size == 32 and det.preprocessing.jpeg_quality == 95 and not det.preprocessing.face_crop
    assert header["params"]["n_components"] == 2 and header["params"]["init_params"] == "k-means++"


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
    code, out, _ = _run(capsys, ["detect", world / "real_test", "--detector", oneclass_file, *_common(world)])
    assert code == 0 and "score = log-likelihood" in out and len(out.splitlines()) == 2 + 12


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


def test_evaluate_writes_table_csv_json_and_plots(world, oneclass_file, capsys, tmp_path):
    out_dir = tmp_path / "eval"
    code, out, err = _run(
        capsys,
        [
            "evaluate",
            "--detector",
            oneclass_file,
            "--real",
            world / "real_test",
            "--fake",
            f"resynth={world / 'fake'}",
            "--fake",
            f"clean={world / 'fake2'}",
            "--out",
            out_dir,
            *_common(world),
        ],
    )
    assert code == 0, err
    assert "positive class = real" in out and "mean" in out
    result = json.loads((out_dir / "results.json").read_text())
    assert [r["generator"] for r in result["rows"]] == ["resynth", "clean"]
    assert result["positive_class"] == "real" and result["rows"][0]["n_real"] == 12
    for m in ("auc", "ap", "accuracy"):
        assert result["mean"][m] == pytest.approx(np.mean([r[m] for r in result["rows"]]))
        assert all(0.0 <= r[m] <= 1.0 for r in result["rows"])
    with (out_dir / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["generator"] for r in table] == ["resynth", "clean", "mean"]
    with (out_dir / "scores.csv").open() as f:
        assert sum(1 for _ in csv.DictReader(f)) == 12 + 16 + 12
    for png in ("roc.png", "histograms.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_folder_is_named(world, capsys):
    code, _, err = _run(
        capsys,
        ["fit-oneclass", "--encoder", world / "run", "--real", world / "empty", "-o", world / "x.npz", *_common(world)],
    )
    assert code == 2 and f"{world / 'empty'}: no images found" in err


def test_unreadable_image_is_named(world, capsys, tmp_path):
    folder = tmp_path / "reals"
    folder.mkdir()
    for p in sorted((world / "real").glob("*.jpg"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "cam_broken.jpg").write_bytes(b"\xff\xd8\xff\xdb not a jpeg at all")
    code, _, err = _run(
        capsys,
        [
            "fit-oneclass",
            "--encoder",
            world / "run",
            "--real",
            folder,
            "-o",
            tmp_path / "x.npz",
            "--components",
            "2",
            *_common(world),
        ],
    )
    assert code == 2 and "cam_broken.jpg: truncated or corrupt" in err and "Traceback" not in err


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
