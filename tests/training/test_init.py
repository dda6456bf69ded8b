"""`pretrain --init`: the paper's start by default (ImageNet for the ResNets, random for the small backbone), a
weights file recorded in the run and used at the first start only (a resumed run takes its weights, statistics
included, from its checkpoint), runs made before --init still resume."""

import json

import pytest
import torch

from bfdkern import cli
from bfdkern.models import CLIP_MEAN, CLIP_STD, BladesModel, load_model, save_model
from bfdkern.tasks import blades_spec
from bfdkern.training import PretrainConfig

SMALL = ["--epochs", "1", "--batch-size", "8", "--image-size", "16", "--backbone", "small", "--feature-dim", "16"]
QUIET = ["--workers", "0", "--device", "cpu", "--quiet"]


def test_the_default_start_is_the_papers():
    assert PretrainConfig(data="/x").init == "imagenet"
    assert PretrainConfig(data="/x", backbone="resnet18").init == "imagenet"
    assert PretrainConfig(data="/x", backbone="small").init == "random"
    with pytest.raises(ValueError, match="the small backbone has no ImageNet weights"):
        PretrainConfig(data="/x", backbone="small", init="imagenet")


def test_a_run_made_before_init_keeps_its_start(tmp_path):
    data = PretrainConfig(data="/x", backbone="small").to_dict()
    del data["init"]
    for old, expected in ((None, "random"), ("/w/resnet.pth", "/w/resnet.pth")):
        (tmp_path / "config.json").write_text(json.dumps({**data, "backbone": "resnet18", "backbone_weights": old}))
        assert PretrainConfig.load(tmp_path).init == expected


def test_pretrain_starts_from_an_encoder_file_and_resumes_without_it(photos, tmp_path, capsys):
    start = BladesModel(blades_spec(), backbone="small", feature_dim=16, mean=CLIP_MEAN, std=CLIP_STD)
    init = save_model(tmp_path / "start.pt", start)
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(photos), "--out", str(run), "--init", str(init), *SMALL, *QUIET]
    assert cli.main([*args, "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert f"init: the backbone, embedding and the task heads of the bfdkern encoder {init}" in out
    assert PretrainConfig.load(run).init == str(init.resolve())
    init.unlink()  # a resumed run needs no start file: its checkpoint holds the weights and statistics
    assert cli.main(["pretrain", "--out", str(run), "--resume", "--quiet"]) == 0
    assert "init:" not in capsys.readouterr().out
    trained = load_model(run)
    assert trained.statistics == start.statistics
    assert not torch.equal(trained.embed.weight, start.embed.weight)  # it trained


def test_bad_init_options_are_one_line(photos, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["pretrain", "--data", str(photos), "--out", out, "--init", "nowhere.pt", *SMALL, *QUIET]) == 2
    assert "nowhere.pt: no such weights file (--init)" in capsys.readouterr().err
    assert cli.main(["pretrain", "--data", str(photos), "--out", out, "--init", "imagenet", *SMALL, *QUIET]) == 2
    assert "the small backbone has no ImageNet weights" in capsys.readouterr().err


def test_offline_imagenet_start_fails_before_the_run_folder_exists(photos, tmp_path, monkeypatch, capsys):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(photos), "--out", str(out), "--backbone", "resnet18", *SMALL[:6], *QUIET]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "place resnet18-f37072fd.pth" in err and "--init random" in err and err.count("\n") == 1
    assert not out.exists()
