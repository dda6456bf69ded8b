"""Encoder files and exported folders read back are validated: wrong structure, wrong types, missing fields,
non-finite weights or lambda and flipped bytes each give one line naming the file and the field; files written
before checksums and saved statistics still load."""

import json

import numpy as np
import pytest
import torch

from bfdkern.models import BladesModel, SavedFileError, load_model, read_checkpoint, save_model
from bfdkern.models.files import payload_checksum, verify_checksum, with_checksum
from bfdkern.tasks import blades_spec
from tests.helpers import flip_each_byte_check


@pytest.fixture
def encoder_file(tmp_path):
    model = BladesModel(blades_spec(), backbone="small", feature_dim=8)
    return save_model(tmp_path / "encoder.pt", model, extra={"steps": 3, "lambdas": [1.0] * 11, "tasks": ["iso"]})


def _rewrite(path, change, checksum=True):
    """Load the payload, apply ``change``, save it again (with a fresh checksum unless told not to)."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(with_checksum(payload) if checksum else payload, path)
    return path


def _set(dotted, value):
    def change(payload):
        *parents, last = dotted.split(".")
        for p in parents:
            payload = payload[p]
        payload[last] = value

    return change


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p.pop("config"), r"field config: missing"),
        (lambda p: p.pop("state_dict"), r"field state_dict: missing"),
        (_set("config", [1, 2]), r"field config: expected a dict, got list"),
        (_set("config.feature_dim", [8]), r"field config.feature_dim: expected an integer, got list \[8\]"),
        (_set("config.backbone", "vgg"), r"field config.backbone: 'vgg' is not one of"),
        (_set("config.spec", ["iso"]), r"field config.spec: expected a task spec dict or None"),
        (_set("config.spec", {"tasks": [{"name": 1}]}), r"field config.spec: not a task spec"),
        (_set("config.mean", [0.5, float("nan"), 0.5]), r"field config.mean: 1 non-finite value"),
        (_set("config.std", [0.5, 0.0, 0.5]), r"field config.std: must be > 0"),
        (_set("config.mean", [0.1, 0.2, 0.3]), r"field config.mean: \[0.1, 0.2, 0.3\] differs from the weights' mean"),
        (
            lambda p: p["state_dict"].update({"embed.weight": 3}),
            r"field state_dict.embed.weight: expected a tensor, got int 3",
        ),
        (_set("state_dict", {1: torch.zeros(2)}), r"field state_dict: expected parameter names \(strings\)"),
        (_set("extra.lambdas", [1.0, float("nan")]), r"field extra.lambdas: 1 non-finite value\(s\), e.g. at index 1"),
        (_set("extra.lambdas", "high"), r"field extra.lambdas: expected a list of numbers"),
        (_set("extra.steps", -1), r"field extra.steps: -1 is below 0"),
        (_set("extra.tasks", [1]), r"field extra.tasks: expected a list of task names"),
    ],
)
def test_damaged_fields_are_named(encoder_file, change, message):
    _rewrite(encoder_file, change)
    with pytest.raises(SavedFileError, match=rf"^{encoder_file}: {message}"):
        load_model(encoder_file)


def test_non_finite_weights_are_named(encoder_file):
    def poison(payload):
        payload["state_dict"]["embed.weight"][0, 3] = float("nan")
        payload["state_dict"]["backbone.body.1.running_var"][2] = float("inf")

    _rewrite(encoder_file, poison)
    with pytest.raises(
        SavedFileError,
        match=r"field state_dict.(embed.weight|backbone.body.1.running_var): 1 of \d+ values are NaN or inf",
    ):
        load_model(encoder_file)


def test_a_missing_checksum_in_a_current_file_is_an_error(encoder_file):
    _rewrite(encoder_file, lambda p: p.pop("checksum"), checksum=False)
    with pytest.raises(SavedFileError, match=r"field checksum: missing"):
        read_checkpoint(encoder_file)
    _rewrite(encoder_file, _set("checksum", 12), checksum=False)
    with pytest.raises(SavedFileError, match=r"field checksum: expected a sha256 hex string, got int 12"):
        read_checkpoint(encoder_file)


def test_a_flipped_byte_in_the_weights_is_detected(encoder_file):
    weights = torch.load(encoder_file, weights_only=True)["state_dict"]["embed.weight"]
    data = bytearray(encoder_file.read_bytes())
    at = data.find(weights.numpy().tobytes()[:64])
    assert at > 0
    data[at + 5] ^= 0x04
    encoder_file.write_bytes(bytes(data))
    assert torch.load(encoder_file, weights_only=True)  # torch itself does not notice
    with pytest.raises(SavedFileError, match=rf"^{encoder_file}: checksum mismatch .*damaged"):
        load_model(encoder_file)


def test_any_flipped_byte_is_an_error_naming_the_file_or_changes_nothing(encoder_file):
    reference = load_model(encoder_file).state_dict()

    def intact(model):
        return all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())

    assert flip_each_byte_check(encoder_file, load_model, intact, n=150, seed=0) > 100


def test_older_files_still_load_with_imagenet_statistics(tmp_path):
    model = BladesModel(blades_spec(), backbone="small", feature_dim=8).eval()
    state = {k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}
    config = {k: v for k, v in model.config.items() if k in ("backbone", "feature_dim", "spec")}
    old = {"format": "bfdkern.model/1", "config": config, "state_dict": state, "extra": {"steps": 1}}
    torch.save(old, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt").eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.features(x), model.features(x), rtol=0, atol=0)
    old["state_dict"]["embed.bias"][0] = float("nan")  # no checksum, but the other checks hold
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(SavedFileError, match=r"old\.pt: field state_dict.embed.bias: 1 of 8 values"):
        load_model(tmp_path / "old.pt")


def test_checksums_cover_every_value_and_type():
    payload = {"a": torch.arange(4.0), "b": [1, 2.0, "x", None, True], "c": {"d": np.zeros(3, np.float32)}}
    base = payload_checksum(payload)
    assert payload_checksum({**payload, "checksum": "ignored"}) == base
    for change in (
        {"a": torch.arange(4.0).double()},
        {"a": torch.arange(4.0).view(2, 2)},
        {"b": [1, 2.0, "x", None, 1]},
        {"b": [1, 2, "x", None, True]},
        {"c": {"d": np.zeros(3, np.float64)}},
        {"c": {"e": np.zeros(3, np.float32)}},
    ):
        assert payload_checksum({**payload, **change}) != base, change
    assert verify_checksum(payload, "p") is False
    assert verify_checksum(with_checksum(dict(payload)), "p") is True


# --- exported folders ----------------------------------------------------------------------------------------
def test_save_and_load_pretrained(tmp_path):
    model = BladesModel(blades_spec(), backbone="small", feature_dim=8, mean=(0.4, 0.4, 0.4), input_size=64).eval()
    folder = model.save_pretrained(tmp_path / "export", extra_config={"note": "hello"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == model.config and config["note"] == "hello"
    for loaded in (BladesModel.from_pretrained(folder), load_model(folder)):
        loaded.eval()
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        assert loaded.config == model.config


def test_damaged_exports_are_named(tmp_path):
    folder = BladesModel(None, backbone="small", feature_dim=8).save_pretrained(tmp_path / "export")
    weights, config_path = folder / "model.safetensors", folder / "config.json"
    clean_weights, clean_config = weights.read_bytes(), config_path.read_text()
    data = bytearray(clean_weights)
    data[-7] ^= 0x10  # inside the last tensor's bytes
    weights.write_bytes(bytes(data))
    with pytest.raises(SavedFileError, match=r"model\.safetensors: checksum mismatch with config\.json"):
        BladesModel.from_pretrained(folder)
    weights.write_bytes(clean_weights[:100])
    with pytest.raises(SavedFileError, match=r"model\.safetensors: not a readable safetensors file"):
        BladesModel.from_pretrained(folder)
    weights.write_bytes(clean_weights)
    config_path.write_text(clean_config.replace('"feature_dim": 8', '"feature_dim": "8"'))
    with pytest.raises(SavedFileError, match=r"config\.json: field model.feature_dim: expected an integer"):
        BladesModel.from_pretrained(folder)
    config_path.write_text("{not json")
    with pytest.raises(SavedFileError, match=r"config\.json: not valid JSON"):
        BladesModel.from_pretrained(folder)
    config_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json: no such file"):
        BladesModel.from_pretrained(folder)
