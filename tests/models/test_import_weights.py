"""`bfdkern import-weights`: the authors' checkpoints (fabricated with the official key names and shapes) become
encoder files that fit-oneclass, detect, evaluate and `pretrain --init` use, with CLIP's statistics; BLADES's
BC MLP becomes a binary detector that scores images as the authors' BC_MLP does."""

import json

import numpy as np
import pytest
import torch

from bfdkern.cli import main
from bfdkern.data.simulator import simulate_uncamera
from bfdkern.data.transforms import to_tensor
from bfdkern.detect import Preprocessing, list_images, load_detector
from bfdkern.models import CLIP_MEAN, load_model, read_checkpoint
from bfdkern.training import read_log
from tests.models import authors_checkpoints as authors


@pytest.fixture(scope="module")
def visual():
    return authors.visual_tower(seed=7)


@pytest.fixture(scope="module")
def checkpoints(visual, tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    bc, mlp = authors.bc_checkpoint(visual)
    torch.save(authors.blades_checkpoint(visual), root / "OC.pth")
    torch.save(bc, root / "BC.pth")
    torch.save(authors.zou25_checkpoint(visual), root / "zou25.pth")
    simulate_uncamera(root / "fake", 6, seed=4, size=32)
    return {"root": root, "mlp": mlp}


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_import_blades_reports_and_writes_an_encoder(checkpoints, visual, tmp_path, capsys):
    code, out, err = _run(
        capsys, ["import-weights", checkpoints["root"] / "OC.pth", "--format", "blades", "-o", tmp_path / "enc.pt"]
    )
    assert code == 0, err
    assert "left out: the CLIP text tower" in out and "left out: text_fc" in out
    assert "CLIP input statistics, 224-pixel inputs" in out and "bfdkern fit-oneclass --encoder" in err
    model = load_model(tmp_path / "enc.pt").eval()
    assert model.statistics[0] == pytest.approx(CLIP_MEAN) and model.heads is None
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), authors.reference_features(visual, x), rtol=0, atol=1e-6)
    imported = read_checkpoint(tmp_path / "enc.pt")["extra"]["imported"]
    assert imported["format"] == "blades" and len(imported["sha256"]) == 64


def test_the_bc_detector_scores_as_the_authors_mlp(checkpoints, visual, tmp_path, capsys):
    det = tmp_path / "bc.npz"
    argv = ["import-weights", checkpoints["root"] / "BC.pth", "--format", "blades", "-o", tmp_path / "enc.pt"]
    code, out, err = _run(capsys, [*argv, "--detector", det, "--size", "64"])
    assert code == 0, err
    assert "imported: the BC MLP" in out and "the BC MLP as a binary detector" in out
    detector, header = load_detector(det)
    assert detector.kind == "binary" and detector.preprocessing == Preprocessing(jpeg_quality=None, size=64)
    images = list_images(checkpoints["root"] / "fake")[:3]
    code, out, err = _run(
        capsys, ["detect", *images, "--detector", det, "--json", "--no-cache", "--quiet", "--device", "cpu"]
    )
    assert code == 0, err
    scores = np.array([json.loads(line)["score"] for line in out.strip().splitlines()])
    # The authors' BC_MLP.forward on the same pixels: L2-normalised feature, fc1, ReLU, fc2, softmax column 1.
    x = torch.stack([to_tensor(Preprocessing(jpeg_quality=None, size=64).load(p), size=64) for p in images])
    f = authors.reference_features(visual, x)
    mlp = checkpoints["mlp"]
    logits = torch.relu(f @ mlp["fc1.weight"].T + mlp["fc1.bias"]) @ mlp["fc2.weight"].T + mlp["fc2.bias"]
    np.testing.assert_allclose(scores, logits.softmax(dim=1)[:, 1].double().numpy(), rtol=0, atol=1e-5)


def test_the_imported_encoder_fits_and_evaluates_detectors(checkpoints, photos, tmp_path, capsys):
    enc, oc = tmp_path / "enc.pt", tmp_path / "oc.npz"
    assert _run(capsys, ["import-weights", checkpoints["root"] / "zou25.pth", "--format", "zou25", "-o", enc])[0] == 0
    common = ["--no-cache", "--quiet", "--device", "cpu", "--size", "32"]
    fit = ["fit-oneclass", "--encoder", f"embedding:{enc}", "--no-normalize", "--components", "2", "--real", photos]
    code, out, err = _run(capsys, [*fit, "-o", oc, *common])
    assert code == 0, err
    evaluate = [
        "evaluate",
        "--allow-overlap",
        "--detector",
        oc,
        "--real",
        photos,
        "--fake",
        f"sim={checkpoints['root'] / 'fake'}",
    ]
    code, out, err = _run(capsys, [*evaluate, "--out", tmp_path / "eval", "--no-cache", "--quiet", "--device", "cpu"])
    assert code == 0, err
    assert (tmp_path / "eval" / "results.json").is_file()
    fit = ["fit-binary", "--encoder", enc, "--real", photos, "--fake", checkpoints["root"] / "fake", "--epochs", "2"]
    code, out, err = _run(capsys, [*fit, "-o", tmp_path / "bc.npz", *common])
    assert code == 0, err
    assert load_detector(tmp_path / "bc.npz")[1]["encoder"]["config"]["mean"] == pytest.approx(CLIP_MEAN)


def test_pretrain_starts_from_an_imported_blades_checkpoint(checkpoints, photos, tmp_path, capsys):
    enc, run = tmp_path / "enc.pt", tmp_path / "run"
    assert _run(capsys, ["import-weights", checkpoints["root"] / "OC.pth", "--format", "blades", "-o", enc])[0] == 0
    small = ["--image-size", "32", "--batch-size", "8", "--epochs", "1", "--max-steps", "2", "--workers", "0"]
    argv = ["pretrain", "--data", photos, "--out", run, "--init", enc, "--backbone", "resnet50", *small]
    code, out, err = _run(capsys, [*argv, "--device", "cpu", "--quiet"])
    assert code == 0, err
    assert (
        f"init: the backbone, embedding (the heads start random: the tasks differ) of the bfdkern encoder {enc}" in out
    )
    assert read_log(run)["step"].tolist() == [1, 2]
    trained, start = load_model(run), load_model(enc)
    assert trained.statistics == start.statistics  # CLIP's, kept through training
    assert not torch.equal(trained.embed.weight, start.embed.weight)


def test_bad_imports_are_one_line(checkpoints, tmp_path, capsys):
    code, _, err = _run(
        capsys, ["import-weights", checkpoints["root"] / "zou25.pth", "--format", "blades", "-o", tmp_path / "e.pt"]
    )
    assert code == 2 and "this is a zou25 checkpoint, not blades; use --format zou25" in err
    argv = ["import-weights", checkpoints["root"] / "zou25.pth", "--format", "zou25", "-o", tmp_path / "e.pt"]
    code, _, err = _run(capsys, [*argv, "--detector", tmp_path / "d.npz"])
    assert code == 2 and "only BLADES's BC.pth holds a detector MLP" in err
    code, _, err = _run(
        capsys,
        [
            "import-weights",
            checkpoints["root"] / "OC.pth",
            "--format",
            "blades",
            "-o",
            tmp_path / "e.pt",
            "--detector",
            tmp_path / "d.npz",
        ],
    )
    assert code == 2 and "no BC MLP" in err and err.count("\n") == 1
