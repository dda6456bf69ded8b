"""Where the weights start (--init): random, ImageNet through torchvision's weights API from the torch hub cache
(the network blocked: a cached file is used without a connection, a missing one is one clear error), or a file
(a torchvision state dict, a bfdkern encoder, an authors' checkpoint)."""

import socket

import pytest
import torch
import torchvision

from bfdkern.models import CLIP_MEAN, IMAGENET_MEAN, BladesModel, build_model, default_init, save_model
from bfdkern.models.files import SavedFileError
from bfdkern.models.weights import check_init
from bfdkern.tasks import blades_spec
from tests.models import authors_checkpoints as authors


@pytest.fixture
def network_attempts(monkeypatch):
    """Any connection attempt (name lookup, connect) fails with OSError and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_the_paper_starts_resnets_from_imagenet_and_the_small_backbone_randomly():
    assert default_init("resnet50") == default_init("resnet18") == "imagenet"
    assert default_init("small") == "random"
    with pytest.raises(ValueError, match="the small backbone has no ImageNet weights"):
        check_init("imagenet", "small")
    with pytest.raises(ValueError, match=r"resnet18 has ImageNet weights \['IMAGENET1K_V1'\]"):
        check_init("imagenet:IMAGENET1K_V2", "resnet18")


def test_random_start_uses_imagenet_statistics(network_attempts):
    model = build_model(blades_spec(), "small", 16, "random")
    assert model.statistics[0] == pytest.approx(IMAGENET_MEAN) and "random" in model.init_report
    assert network_attempts == []


def test_imagenet_weights_come_from_the_torch_hub_cache_without_the_network(tmp_path, monkeypatch, network_attempts):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = torchvision.models.resnet18(weights=None).state_dict()  # right names and shapes, random values
    target = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    torch.save(cached, target)
    model = build_model(blades_spec(), "resnet18", 32, "imagenet")
    assert network_attempts == []
    for name, value in cached.items():
        if not name.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[name], value), name
    assert f"ImageNet weights IMAGENET1K_V1 from {target}" in model.init_report
    assert model.statistics[0] == pytest.approx(IMAGENET_MEAN)


@pytest.mark.parametrize(
    "backbone,init,file",
    [
        ("resnet50", "imagenet", "resnet50-0676ba61.pth"),  # what resnet50(pretrained=True) loads
        ("resnet50", "imagenet:IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
        ("resnet18", "imagenet", "resnet18-f37072fd.pth"),
    ],
)
def test_offline_without_the_cached_file_is_one_clear_error(
    backbone, init, file, tmp_path, monkeypatch, network_attempts
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as info:
        build_model(blades_spec(), backbone, 768, init)
    message = str(info.value)
    assert network_attempts, "the download was not even tried"
    assert "\n" not in message
    assert (
        f"place {file} (from https://download.pytorch.org/models/{file}) at {tmp_path / 'torch/hub/checkpoints' / file}"
        in message
    )
    assert "--init random" in message and "network blocked by the test" in message
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / file).exists()


def test_a_damaged_cached_file_names_the_file(tmp_path, monkeypatch, network_attempts):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"half a download")
    with pytest.raises(SavedFileError, match=r"resnet18-f37072fd\.pth: cannot be read as a weights-only torch"):
        build_model(blades_spec(), "resnet18", 32, "imagenet")
    assert network_attempts == []


def test_a_torchvision_state_dict_file_starts_the_backbone(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = build_model(blades_spec(), "resnet18", 32, str(tmp_path / "resnet18.pth"))
    for name, value in reference.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[name], value), name
    assert "its fc left out" in model.init_report
    with pytest.raises(ValueError, match=r"resnet18\.pth: checkpoint does not fit the resnet50 backbone"):
        build_model(blades_spec(), "resnet50", 32, str(tmp_path / "resnet18.pth"))


def test_a_bfdkern_encoder_file_starts_everything_it_can(tmp_path):
    spec = blades_spec()
    source = BladesModel(spec, backbone="small", feature_dim=16, mean=CLIP_MEAN, std=(0.2, 0.3, 0.4))
    path = save_model(tmp_path / "enc.pt", source)
    same = build_model(spec, "small", 16, str(path))
    for name, value in source.state_dict().items():
        assert torch.equal(same.state_dict()[name], value), name
    assert "and the task heads" in same.init_report
    fewer = spec.subset(["iso", "manipulated"])
    other = build_model(fewer, "small", 16, str(path))
    assert torch.equal(other.embed.weight, source.embed.weight) and torch.equal(other.std, source.std)
    assert "the heads start random: the tasks differ" in other.init_report
    with pytest.raises(ValueError, match=r"enc\.pt: its encoder is small with a 16-d embedding, .* small with 8-d"):
        build_model(spec, "small", 8, str(path))


def test_an_authors_checkpoint_starts_backbone_embedding_and_statistics(tmp_path):
    visual = authors.visual_tower(seed=1)
    torch.save(authors.blades_checkpoint(visual), tmp_path / "blades.pth")
    model = build_model(blades_spec(), "resnet50", 768, str(tmp_path / "blades.pth")).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), authors.reference_features(visual, x), rtol=0, atol=1e-6)
    assert model.statistics[0] == pytest.approx(CLIP_MEAN) and "the heads start random" in model.init_report
    assert "left out: the CLIP text tower" in model.init_report
    with pytest.raises(ValueError, match=r"blades\.pth: its encoder is resnet50 with a 768-d embedding"):
        build_model(blades_spec(), "resnet18", 768, str(tmp_path / "blades.pth"))


def test_unknown_files_are_refused(tmp_path):
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"odd\.pt: not a weights file bfdkern knows"):
        build_model(blades_spec(), "small", 8, str(tmp_path / "odd.pt"))
    with pytest.raises(FileNotFoundError, match=r"gone\.pt: no such weights file"):
        build_model(blades_spec(), "small", 8, str(tmp_path / "gone.pt"))
