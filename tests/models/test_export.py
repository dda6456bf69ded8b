"""`bfdkern export RUN -o DIR`: a finished run becomes config.json + model.safetensors + lambda.png + a model card
that BladesModel.from_pretrained and --encoder DIR load, with the run's data summary, tasks and final lambda,
its evaluation tables and its provenance, and no path of the training machine."""

import json

import numpy as np
import pytest
import torch

from bfdkern.cli import main
from bfdkern.data.simulator import simulate_uncamera
from bfdkern.models import BladesModel, load_model, read_checkpoint

SMALL = ["--epochs", "1", "--batch-size", "8", "--image-size", "16", "--backbone", "small", "--feature-dim", "16"]
QUIET = ["--workers", "0", "--device", "cpu", "--quiet"]


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = root / "run"
    assert main(["pretrain", "--data", str(photos), "--out", str(run), "--max-steps", "2", *SMALL, *QUIET]) == 0
    simulate_uncamera(root / "fake", 8, seed=5, size=32)
    common = ["--no-cache", "--quiet", "--device", "cpu"]
    fit = [
        "fit-oneclass",
        "--encoder",
        str(run),
        "--real",
        str(photos),
        "--components",
        "1",
        "-o",
        str(root / "oc.npz"),
    ]
    assert main([*fit, *common]) == 0
    evaluate = [
        "evaluate",
        "--allow-overlap",
        "--detector",
        str(root / "oc.npz"),
        "--real",
        str(photos),
        "--fake",
        f"sim={root / 'fake'}",
    ]
    assert main([*evaluate, "--out", str(run / "eval"), *common]) == 0
    return run


def test_export_writes_a_folder_that_loads_as_the_run_encoder(run, photos, tmp_path, capsys):
    out = tmp_path / "blades-small"
    code, stdout, err = _run(capsys, ["export", run, "-o", out])
    assert code == 0, err
    assert f"evaluation in the model card: {run / 'eval' / 'results.json'}" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "lambda.png", "model.safetensors"]
    exported, original = BladesModel.from_pretrained(out).eval(), load_model(run).eval()
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(exported(x), original(x), rtol=0, atol=0)
    assert exported.config == original.config
    config = json.loads((out / "config.json").read_text())
    assert config["bfdkern"]["version"] and len(config["bfdkern"]["commit"]) == 40  # this tree is a git checkout
    assert config["training"]["images"] == 24 and config["training"]["data"] == photos.name
    card = (out / "README.md").read_text()
    for text in (str(photos), str(run), str(tmp_path)):
        assert text not in card and text not in json.dumps(config), "a path of the training machine leaked"
    assert "![lambda during training](lambda.png)" in card and f"`{photos.name}`, 24 images used" in card
    lambdas = read_checkpoint(run)["extra"]["lambdas"]
    assert f"| manipulated | binary (outer) | 1.0000 | {lambdas[9]:.4f} |" in card
    result = json.loads((run / "eval" / "results.json").read_text())
    row = result["rows"][0]
    assert (
        f"| real | sim | {row['n_real']} | {row['n_fake']} | {row['auc']:.3f} | {row['ap_fake']:.3f} | "
        f"{row['acc']:.3f} |" in card
    )
    mean = result["mean"]
    assert f"| **mean** | | | | {mean['auc']:.3f} | {mean['ap_fake']:.3f} | {mean['acc']:.3f} |" in card
    assert f"bfdkern {config['bfdkern']['version']}, git commit `{config['bfdkern']['commit']}`" in card


def test_the_exported_folder_is_an_encoder_for_the_detection_commands(run, photos, tmp_path, capsys):
    out = tmp_path / "export"
    assert _run(capsys, ["export", run, "-o", out])[0] == 0
    det = tmp_path / "oc.npz"
    fit = ["fit-oneclass", "--encoder", out, "--real", photos, "--components", "1", "-o", det]
    code, _, err = _run(capsys, [*fit, "--no-cache", "--quiet", "--device", "cpu"])
    assert code == 0, err
    with np.load(det, allow_pickle=False) as npz:
        header = json.loads(str(npz["__meta__"]))
    assert header["encoder"]["relative_source"] == "export" and header["preprocessing"]["size"] == 16


def test_export_refusals_are_one_line(run, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, ["export", run, "-o", tmp_path / "busy"])
    assert code == 2 and "busy: the folder is not empty" in err
    code, _, err = _run(capsys, ["export", tmp_path, "-o", tmp_path / "new"])
    assert code == 2 and "encoder.pt: no such file: export needs a finished run" in err
    code, _, err = _run(capsys, ["export", run, "-o", tmp_path / "new", "--results", tmp_path / "nothing"])
    assert code == 2 and "nothing: no such evaluation results file" in err
