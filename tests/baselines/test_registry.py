"""The detector registry and the frozen-feature slot: user encoders (TorchScript, torchvision + state dict)
with the same heads, saved, reloaded and evaluated by `bfdkern evaluate`; nothing is downloaded."""

import csv

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from bfdkern import cli
from bfdkern.detect import list_images, load_detector
from bfdkern.detect.encoder import load_frozen_encoder, torchvision_encoder
from bfdkern.detect.fitting import fit_frozen
from bfdkern.detect.registry import catalogue
from bfdkern.recipes.presets import PRESETS

NO_CACHE = {"cache_dir": None, "num_workers": 1, "progress": False, "device": "cpu"}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.fixture
def torchscript_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.jit.script(Tiny()).save(str(path))
    return path


def test_list_names_every_detector_and_the_user_weights(capsys):
    assert cli.main(["evaluate", "--list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    presets = {p for p in PRESETS if p != "blades"}
    assert set(lines) == set(catalogue()) | presets
    assert presets.isdisjoint(catalogue())  # the presets come from the recipes, not the library's catalogue
    assert "user-supplied" in lines["frozen-oc"] and "user-supplied" not in lines["blades-oc"]
    for name in ("zou25", "hu21", "cnnd", "gramnet"):
        assert "not implemented" not in lines[name]
    assert "none" in lines["hu21"]  # training-free: no weights at all


def test_torchscript_encoder_fits_saves_and_evaluates(torchscript_file, eval_sets, tmp_path, capsys):
    source = f"torchscript:{torchscript_file}"
    det_path = tmp_path / "frozen.npz"
    det = fit_frozen(
        source,
        list_images(eval_sets / "fit"),
        det_path,
        size=32,
        detector_options={"n_components": 2},
        feature_options=NO_CACHE,
    )
    loaded, _ = load_detector(det_path)
    assert loaded.encoder["source"] == f"torchscript:{torchscript_file.resolve()}" and loaded.feature_dim == 6
    encoder = load_frozen_encoder(loaded.encoder["source"])
    feats = encoder.features(list_images(eval_sets / "real"), loaded.preprocessing, **NO_CACHE)
    assert feats.shape == (12, 6) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(loaded.score(feats), det.score(feats))

    out = tmp_path / "eval"
    args = ["evaluate", "--detector", str(det_path), "--real", str(eval_sets / "real")]
    args += ["--fake", f"nocam={eval_sets / 'fake'}", "--out", str(out), "--no-cache", "--quiet", "--device", "cpu"]
    assert cli.main(args) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["generator"] == "nocam" and 0 <= float(rows[0]["auc"]) <= 1
    # `bfdkern detect` reloads the user encoder from the file too.
    capsys.readouterr()
    detect = [
        "detect",
        str(eval_sets / "real"),
        "--detector",
        str(det_path),
        "--no-cache",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert cli.main(detect) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 + 12

    # Another encoder's weights are refused by name.
    other = tmp_path / "other.pt"
    torch.manual_seed(1)
    torch.jit.script(Tiny()).save(str(other))
    assert cli.main([*args, "--encoder", f"torchscript:{other}"]) == 2
    assert "fitted on features of encoder" in capsys.readouterr().err


def test_torchvision_state_dict_binary(eval_sets, tmp_path):
    net = torchvision.models.resnet18(weights=None, num_classes=7)
    weights = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, weights)
    encoder = torchvision_encoder("resnet18", weights)
    assert isinstance(encoder.fc, nn.Identity)
    torch.testing.assert_close(encoder.conv1.weight, net.conv1.weight)
    det = fit_frozen(
        f"torchvision:resnet18:{weights}",
        list_images(eval_sets / "fit"),
        tmp_path / "bc.npz",
        kind="binary",
        fake_paths=list_images(eval_sets / "fake")[:6],
        size=32,
        detector_options={"hidden": 8, "max_epochs": 3},
        feature_options=NO_CACHE,
    )
    loaded, _ = load_detector(tmp_path / "bc.npz")
    assert loaded.kind == "binary" and loaded.feature_dim == 512 and det.feature_dim == 512


def test_bad_encoders_are_named(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt: not a TorchScript file"):
        load_frozen_encoder(f"torchscript:{junk}")
    with pytest.raises(ValueError, match="junk.pt: cannot be read as a weights-only torch state dict: "):
        load_frozen_encoder(f"torchvision:resnet18:{junk}")
    whole = tmp_path / "whole.pth"
    torch.save(torchvision.models.resnet18(), whole)  # the model, not its state dict: one line, not six
    with pytest.raises(ValueError) as info:
        load_frozen_encoder(f"torchvision:resnet18:{whole}")
    assert str(info.value) == (
        f"{whole}: cannot be read as a weights-only torch state dict: it holds a pickled "
        "torchvision.models.resnet.ResNet object (a whole model?), which weights-only loading does not run; "
        "save its state_dict() instead"
    )
    with pytest.raises(ValueError, match="unknown torchvision architecture 'resnet7'"):
        load_frozen_encoder(f"torchvision:resnet7:{junk}")
    small = tmp_path / "small.pth"
    torch.save(Tiny().state_dict(), small)
    with pytest.raises(ValueError, match="small.pth: does not fit torchvision resnet18"):
        load_frozen_encoder(f"torchvision:resnet18:{small}")
    with pytest.raises(ValueError, match="expected torchvision:ARCH:FILE"):
        load_frozen_encoder("torchvision:resnet18")
