"""Detector files find their encoder by content hash: through a path relative to the detector file (a folder
holding both can be moved or shared), the recorded absolute path, or beside the detector; a different encoder
under the same name is refused; old detector files (absolute paths, fingerprints without the input statistics)
still load. Every encoder's input statistics are in its identity."""

import json
import shutil

import numpy as np
import pytest
import torch

from bfdkern.cli import main
from bfdkern.data.simulator import simulate_collection
from bfdkern.detect import DetectorFileError, OneClassDetector, Preprocessing, load_detector, save_detector
from bfdkern.detect.encoder import load_detector_with_any_encoder, load_encoder, load_frozen_encoder
from bfdkern.detect.features import encoder_fingerprint
from bfdkern.detect.serialization import META_KEY
from bfdkern.detect.sources import candidate_sources, relative_source, split_source
from bfdkern.models import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, BladesModel, save_model
from bfdkern.tasks import blades_spec

PREP = Preprocessing(jpeg_quality=None, size=32)


def _encoder(path, seed=0, **kw):
    torch.manual_seed(seed)
    return save_model(path, BladesModel(blades_spec(), backbone="small", feature_dim=8, input_size=32, **kw))


def _fitted(frozen, detector_path):
    det = OneClassDetector(n_components=1).fit(np.random.default_rng(0).normal(size=(20, 8)))
    return save_detector(detector_path, det, encoder=frozen.identity, preprocessing=PREP)


def test_source_strings():
    assert split_source("torchvision:resnet50:/w/a.pth") == ("torchvision:resnet50:", "/w/a.pth")
    assert split_source("embedding:/r/encoder.pt") == ("embedding:", "/r/encoder.pt")
    assert split_source("/r/encoder.pt") == ("", "/r/encoder.pt")
    assert relative_source("embedding:/a/b/encoder.pt", "/a/c") == "embedding:../b/encoder.pt"
    found = candidate_sources({"source": "/x/run/encoder.pt", "relative_source": "run/encoder.pt"}, "/y/d/det.npz")
    assert found == ["/y/d/run/encoder.pt", "/x/run/encoder.pt", "/y/d/encoder.pt"]
    crafted = {"source": "/x/run/encoder.pt", "relative_source": "torchscript:code.pt"}
    assert candidate_sources(crafted, "/y/d/det.npz") == ["/x/run/encoder.pt", "/y/d/encoder.pt"]


def test_a_moved_folder_finds_its_encoder_and_detect_runs(tmp_path, capsys):
    shared = tmp_path / "shared"
    encoder = _encoder(shared / "run" / "encoder.pt")
    simulate_collection(tmp_path / "real", 8, seed=0, size=32)
    det = shared / "oc.npz"
    common = ["--quiet", "--no-cache", "--device", "cpu"]
    fit = ["fit-oneclass", "--encoder", str(shared / "run"), "--real", str(tmp_path / "real"), "-o", str(det)]
    assert main([*fit, "--components", "1", *common]) == 0
    header = load_detector(det)[1]
    assert header["encoder"]["relative_source"] == "run/encoder.pt"
    assert header["encoder"]["source"] == str(encoder.resolve())
    moved = tmp_path / "elsewhere" / "copy"
    shutil.move(str(shared), str(moved))
    capsys.readouterr()
    assert main(["detect", str(tmp_path / "real"), "--detector", str(moved / "oc.npz"), *common]) == 0
    assert "oneclass detector" in capsys.readouterr().out
    _, _, frozen = load_detector_with_any_encoder(moved / "oc.npz")
    assert frozen.identity["source"] == str((moved / "run" / "encoder.pt").resolve())


def test_an_encoder_moved_beside_its_detector_is_found(tmp_path):
    encoder = _encoder(tmp_path / "runs" / "a" / "encoder.pt")
    det = _fitted(load_encoder(encoder), tmp_path / "share" / "det.npz")
    shutil.move(str(encoder), str(tmp_path / "share" / "encoder.pt"))
    _, _, frozen = load_detector_with_any_encoder(det)
    assert frozen.identity["source"] == str((tmp_path / "share" / "encoder.pt").resolve())


def test_a_different_encoder_under_the_same_name_is_refused(tmp_path):
    encoder = _encoder(tmp_path / "run" / "encoder.pt", seed=0)
    det = _fitted(load_encoder(encoder), tmp_path / "det.npz")
    _encoder(encoder, seed=1)  # retrained in place: same path, other weights
    with pytest.raises(
        DetectorFileError,
        match=r"det\.npz: fitted on features of encoder \w{12}, but .*encoder\.pt is \w{12} \(a different encoder under the same name\)",
    ):
        load_detector_with_any_encoder(det)
    with pytest.raises(DetectorFileError, match=r"det\.npz: fitted on features of encoder"):
        load_detector_with_any_encoder(det, str(encoder))  # named explicitly: refused as well


def test_a_lost_encoder_is_one_clear_error(tmp_path):
    encoder = _encoder(tmp_path / "run" / "encoder.pt")
    det = _fitted(load_encoder(encoder), tmp_path / "d" / "det.npz")
    encoder.unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"det\.npz: its encoder was not found \(looked for .*run/encoder\.pt.*\); pass --encoder",
    ):
        load_detector_with_any_encoder(det)


def _as_old_detector_file(path, fingerprint):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays.pop(META_KEY)))
    header.pop("checksum")
    header["encoder"].pop("relative_source")
    header["encoder"]["fingerprint"] = fingerprint
    np.savez(path, **{META_KEY: np.array(json.dumps(header))}, **arrays)


def test_old_detector_files_with_their_fingerprint_still_load(tmp_path):
    encoder = _encoder(tmp_path / "run" / "encoder.pt")
    frozen = load_encoder(encoder)
    det = _fitted(frozen, tmp_path / "det.npz")
    # Before the statistics were saved with the weights, the fingerprint hashed the weights alone.
    old = encoder_fingerprint(frozen.module, skip=("mean", "std"))
    assert old != frozen.fingerprint
    _as_old_detector_file(det, old)
    assert load_detector_with_any_encoder(det)[2].fingerprint == frozen.fingerprint
    embedding = load_frozen_encoder(f"embedding:{encoder}")
    assert embedding.matches(encoder_fingerprint(embedding.module, skip=("model.mean", "model.std")))
    # An encoder with other statistics cannot be the one an old file was fitted on.
    clip = load_encoder(_encoder(tmp_path / "clip" / "encoder.pt", mean=CLIP_MEAN, std=CLIP_STD))
    assert not clip.matches(encoder_fingerprint(clip.module, skip=("mean", "std")))


def test_identities_carry_the_input_statistics_and_size(tmp_path):
    frozen = load_encoder(_encoder(tmp_path / "e.pt", mean=CLIP_MEAN, std=CLIP_STD))
    config = frozen.identity["config"]
    assert config["mean"] == pytest.approx(CLIP_MEAN) and config["std"] == pytest.approx(CLIP_STD)
    assert config["image_size"] == 32
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    user = load_frozen_encoder(f"torchvision:resnet18:{tmp_path / 'r18.pth'}")
    assert user.identity["config"]["mean"] == pytest.approx(IMAGENET_MEAN)
