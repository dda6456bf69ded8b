"""The authors' checkpoints import: fabricated files with the official key names and shapes give encoders whose
features equal a forward written here from torchvision's resnet50 and the official fc; everything else is
reported as left out; damaged or foreign files are refused with one line naming the file."""

import pytest
import torch

from bfdkern.models import CLIP_MEAN, CLIP_STD, import_authors_encoder, load_model, save_model
from bfdkern.models.authors import read_authors_checkpoint
from bfdkern.models.files import SavedFileError
from tests.models import authors_checkpoints as authors


@pytest.fixture(scope="module")
def visual():
    return authors.visual_tower(seed=3)


@pytest.fixture(scope="module")
def files(visual, tmp_path_factory):
    root = tmp_path_factory.mktemp("authors")
    bc, mlp = authors.bc_checkpoint(visual)
    made = {
        "blades": authors.blades_checkpoint(visual),
        "zou25": authors.zou25_checkpoint(visual),
        "eal": authors.eal_checkpoint(visual),
        "bc": bc,
    }
    paths = {}
    for name, checkpoint in made.items():
        paths[name] = root / f"{name}.pth"
        torch.save(checkpoint, paths[name])
    paths["mlp"] = mlp
    return paths


def _images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,fmt", [("blades", "blades"), ("zou25", "zou25"), ("eal", "eal"), ("bc", "blades")])
def test_imported_features_equal_the_authors_forward(name, fmt, files, visual, tmp_path):
    model, weights = import_authors_encoder(files[name], fmt)
    assert weights.format == fmt and model.heads is None and model.input_size == 224
    assert model.statistics == (tuple(model.config["mean"]), tuple(model.config["std"]))
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(CLIP_MEAN), rtol=0, atol=1e-7)
    torch.testing.assert_close(model.std.flatten(), torch.tensor(CLIP_STD), rtol=0, atol=1e-7)
    x = _images()
    with torch.no_grad():
        got = model.features(x)
    torch.testing.assert_close(got, authors.reference_features(visual, x), rtol=0, atol=1e-6)
    if name != "blades":
        return
    # Saved as a bfdkern encoder file, it reloads with the same statistics and features.
    reloaded = load_model(save_model(tmp_path / "enc.pt", model)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.features(x), got, rtol=0, atol=0)


def test_the_report_names_what_was_left_out(files):
    blades = "\n".join(read_authors_checkpoint(files["blades"], "blades").report())
    assert "CLIP text tower" in blades and "text_fc" in blades and "text transformer (CLIP's" in blades
    assert "144 entries" in blades  # 12 resblocks x 12 tensors of CLIP's transformer
    zou25 = "\n".join(read_authors_checkpoint(files["zou25"], "zou25").report())
    assert "Zou25's task heads" in zou25 and "(10 entries)" in zou25
    eal = "\n".join(read_authors_checkpoint(files["eal"], "eal").report())
    assert "sink_temp" in eal and "100 entries" in eal  # DistilBERT: 4 embedding + 6 x 16 layer tensors
    bc = "\n".join(read_authors_checkpoint(files["bc"], "blades").report())
    assert "the BC MLP fc1, fc2 (give --detector" in bc  # not asked for: said, not silently dropped


def test_the_bc_mlp_is_read_as_the_binary_detector_layers(files):
    weights = read_authors_checkpoint(files["bc"], "blades", mlp=True)
    mlp = files["mlp"]
    assert torch.equal(weights.mlp["0.weight"], mlp["fc1.weight"]) and torch.equal(
        weights.mlp["2.bias"], mlp["fc2.bias"]
    )
    assert "imported: the BC MLP" in "\n".join(weights.report())
    with pytest.raises(SavedFileError, match=r"blades\.pth: no BC MLP .*only BC\.pth"):
        read_authors_checkpoint(files["blades"], "blades", mlp=True)


def test_module_prefixes_and_half_precision(visual, tmp_path):
    checkpoint = authors.blades_checkpoint(visual)
    checkpoint["model"] = {
        "module." + k: (v.half() if k.startswith("model.visual.") and v.is_floating_point() else v)
        for k, v in checkpoint["model"].items()
    }
    torch.save(checkpoint, tmp_path / "dp.pth")
    model, weights = import_authors_encoder(tmp_path / "dp.pth", "blades")
    report = "\n".join(weights.report())
    assert "removed 'module.' prefixes" in report and "from float16 to float32" in report
    assert model.embed.weight.dtype == torch.float32
    torch.testing.assert_close(model.embed.weight, visual["fc.weight"].half().float(), rtol=0, atol=0)


def test_missing_batchnorm_counters_are_filled_and_said(visual, tmp_path):
    checkpoint = authors.eal_checkpoint(visual)
    checkpoint["model"] = {k: v for k, v in checkpoint["model"].items() if not k.endswith("num_batches_tracked")}
    torch.save(checkpoint, tmp_path / "old.pth")
    _, weights = import_authors_encoder(tmp_path / "old.pth", "eal")
    assert "53 BatchNorm counters num_batches_tracked absent: set to 0" in weights.report()


def test_a_missing_encoder_weight_is_an_error_not_a_random_layer(visual, tmp_path):
    checkpoint = authors.blades_checkpoint(visual)
    del checkpoint["model"]["model.visual.layer3.2.conv2.weight"]
    torch.save(checkpoint, tmp_path / "partial.pth")
    with pytest.raises(
        SavedFileError,
        match=r"partial\.pth: checkpoint does not fit the resnet50 backbone: missing \[layer3\.2\.conv2\.weight\]",
    ):
        import_authors_encoder(tmp_path / "partial.pth", "blades")


def test_foreign_and_mismatched_files_are_refused(files, tmp_path):
    with pytest.raises(SavedFileError, match=r"zou25\.pth: this is a zou25 checkpoint, not blades; use --format zou25"):
        import_authors_encoder(files["zou25"], "blades")
    torch.save({"model": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, tmp_path / "plain.pth")
    with pytest.raises(SavedFileError, match=r"plain\.pth: no image encoder .*not a BLADES, Zou25 or EAL"):
        import_authors_encoder(tmp_path / "plain.pth", "eal")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SavedFileError, match=r"junk\.pth: cannot be read as a weights-only torch checkpoint"):
        import_authors_encoder(tmp_path / "junk.pth", "eal")
    with pytest.raises(FileNotFoundError, match=r"none\.pth: no such checkpoint file"):
        import_authors_encoder(tmp_path / "none.pth", "eal")
    with pytest.raises(ValueError, match="unknown checkpoint format 'clip'"):
        import_authors_encoder(files["eal"], "clip")


class _Payload:
    pass


def test_a_checkpoint_carrying_code_is_refused(visual, tmp_path):
    checkpoint = authors.blades_checkpoint(visual)
    checkpoint["extra"] = _Payload()
    torch.save(checkpoint, tmp_path / "evil.pth")
    with pytest.raises(SavedFileError, match=r"evil\.pth: cannot be read as a weights-only"):
        import_authors_encoder(tmp_path / "evil.pth", "blades")
