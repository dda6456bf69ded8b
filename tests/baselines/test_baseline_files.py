"""CNND / GramNet detector files keep their input statistics (ImageNet's: they are torchvision classifiers) and
are validated on load: damaged fields and flipped bytes are named; files written before both still load."""

import json

import pytest
import torch

from bfdkern.detect.baselines import CNNDetector, GramNetDetector
from bfdkern.models import IMAGENET_MEAN, IMAGENET_STD, SavedFileError
from bfdkern.models.files import with_checksum


@pytest.fixture
def cnnd_file(tmp_path):
    return CNNDetector(arch="resnet18", size=32).save(tmp_path / "cnnd.pt")


def test_the_statistics_are_stored_and_used(tmp_path):
    det = GramNetDetector(arch="resnet18", size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    loaded = GramNetDetector.load(det.save(tmp_path / "g.pt"))
    assert loaded.params["mean"] == [0.5, 0.5, 0.5] and loaded.params["std"] == [0.5, 0.25, 0.5]
    from PIL import Image

    image = Image.new("RGB", (32, 32), (128, 64, 255))
    x = loaded._batch([image], "cpu")
    expected = (torch.tensor([128, 64, 255]) / 255.0 - 0.5) / torch.tensor([0.5, 0.25, 0.5])
    torch.testing.assert_close(x[0, :, 0, 0], expected.float())


def test_older_files_load_with_imagenet_statistics(cnnd_file):
    payload = torch.load(cnnd_file, weights_only=True)
    params = json.loads(payload["params"])
    del params["mean"], params["std"]
    torch.save({"kind": "cnnd", "params": json.dumps(params), "state": payload["state"]}, cnnd_file)
    loaded = CNNDetector.load(cnnd_file)
    assert loaded.params["mean"] == list(IMAGENET_MEAN) and loaded.params["std"] == list(IMAGENET_STD)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p.update(params="{not json"), r"field params: cannot build a cnnd detector"),
        (lambda p: p.update(params=json.dumps({"arch": "vgg"})), r"field params: cannot build a cnnd detector"),
        (lambda p: p.update(params=7), r"field params: expected a string, got int 7"),
        (lambda p: p["state"]["fc.weight"].fill_(float("nan")), r"field state.fc.weight: 512 of 512 values are NaN"),
        (lambda p: p["state"].pop("fc.bias"), r"checkpoint does not fit the cnnd network: missing \[fc.bias\]"),
        (lambda p: p.update(kind="gramnet"), r"not a cnnd detector file \(it holds 'gramnet'\)"),
    ],
)
def test_damaged_files_are_named(cnnd_file, change, message):
    payload = torch.load(cnnd_file, weights_only=True)
    change(payload)
    torch.save(with_checksum(payload), cnnd_file)
    with pytest.raises(SavedFileError, match=rf"^{cnnd_file}: {message}"):
        CNNDetector.load(cnnd_file)


def test_a_flipped_byte_in_the_weights_is_detected(cnnd_file):
    weight = torch.load(cnnd_file, weights_only=True)["state"]["layer4.1.conv2.weight"]
    data = bytearray(cnnd_file.read_bytes())
    at = data.find(weight.numpy().tobytes()[:64])
    data[at + 9] ^= 0x20
    cnnd_file.write_bytes(bytes(data))
    with pytest.raises(SavedFileError, match=rf"^{cnnd_file}: checksum mismatch"):
        CNNDetector.load(cnnd_file)


def test_evaluate_names_a_pt_file_of_another_kind(tmp_path):
    from bfdkern.detect.registry import load_scorer

    torch.save({"kind": ["cnnd"]}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"odd\.pt: not a CNND or GramNet detector file"):
        load_scorer(str(tmp_path / "odd.pt"))
