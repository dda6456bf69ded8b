"""BladesModel: heads packed as the spec says, L2-normalised features, checkpoints that round-trip and
refuse what does not fit with an error naming the file."""

import pytest
import torch

from bfdkern.models import BladesModel, load_model, read_checkpoint, save_model
from bfdkern.models.files import with_checksum
from bfdkern.ops.reference import per_task_losses
from bfdkern.tasks import Task, TaskSpec, blades_spec
from tests.helpers import random_targets


def _images(batch=3, size=32, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone", ["small", "resnet18", "resnet50"])
def test_logits_and_features_match_the_spec(backbone):
    spec = blades_spec()
    model = BladesModel(spec, backbone=backbone, feature_dim=48).eval()
    x = _images()
    logits = model(x)
    assert logits.shape == (3, spec.num_columns)
    feats = model.features(x)
    assert feats.shape == (3, 48)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))
    # The heads are one Linear whose column k-slices are the spec's task columns.
    emb = model.embedding(x)
    for k in range(spec.num_tasks):
        cols = spec.columns(k)
        expected = emb @ model.heads.weight[cols].T + model.heads.bias[cols]
        torch.testing.assert_close(logits[:, cols], expected)


def test_heads_follow_a_custom_spec_and_train():
    spec = TaskSpec(
        (
            Task("iso", "ordinal", 1),
            Task("make", "categorical", 3, ("a", "b", "c")),
            Task("manipulated", "binary", 2, outer=True),
            Task("region", "multilabel", 2),
        )
    )
    model = BladesModel(spec, backbone="small", feature_dim=16)
    assert model.heads.out_features == spec.num_columns == 8
    targets = random_targets(spec, 4, missing=0.0, dtype=torch.float32)
    per_task = per_task_losses(model(_images(4)), targets, spec)
    assert per_task.shape == (spec.num_tasks,) and torch.isfinite(per_task).all()
    per_task.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        BladesModel(blades_spec(), backbone="vgg")
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        BladesModel(blades_spec(), backbone="small")(torch.rand(2, 1, 8, 8))


def test_save_load_round_trip(tmp_path):
    spec = blades_spec()
    model = BladesModel(spec, backbone="small", feature_dim=32).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics must survive too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = save_model(tmp_path / "run" / "encoder.pt", model, extra={"step": 7, "lambdas": torch.ones(11)})
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temporary file behind
    for source in (path, tmp_path / "run"):
        loaded = load_model(source).eval()
        assert loaded.config == model.config and loaded.spec == spec
        x = _images()
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded.features(x), model.features(x), rtol=0, atol=0)
    extra = read_checkpoint(path)["extra"]
    assert extra["step"] == 7 and torch.equal(extra["lambdas"], torch.ones(11))


def test_checkpoint_that_does_not_fit_names_the_file(tmp_path):
    path = save_model(tmp_path / "enc.pt", BladesModel(blades_spec(), backbone="small", feature_dim=32))
    payload = torch.load(path, weights_only=True)
    small_spec = blades_spec().subset(["iso", "make", "manipulated"])
    payload["config"]["spec"] = small_spec.to_dict()
    torch.save(with_checksum(payload), tmp_path / "other.pt")
    c_file, c_model = blades_spec().num_columns, small_spec.num_columns
    with pytest.raises(
        ValueError,
        match=rf"other\.pt: checkpoint does not fit .*heads\.weight: file \({c_file}, 32\), model \({c_model}, 32\)",
    ):
        load_model(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: cannot be read as a weights-only torch checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"plain\.pt: not a bfdkern model checkpoint .*bfdkern import-weights"):
        load_model(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt: no such checkpoint file"):
        load_model(tmp_path / "nowhere.pt")


class _Arbitrary:
    pass


def test_arbitrary_pickles_are_refused(tmp_path):
    torch.save({"format": "bfdkern.model/2", "obj": _Arbitrary()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt: cannot be read as a weights-only"):
        load_model(tmp_path / "evil.pt")


def test_an_encoder_without_heads_gives_features_only(tmp_path):
    model = BladesModel(None, backbone="small", feature_dim=8, input_size=64).eval()
    loaded = load_model(save_model(tmp_path / "features.pt", model)).eval()
    assert loaded.heads is None and loaded.config == model.config and loaded.input_size == 64
    x = _images()
    torch.testing.assert_close(loaded.features(x), model.features(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="no task heads"):
        loaded(x)


def test_the_input_statistics_are_part_of_the_weights():
    model = BladesModel(blades_spec(), backbone="small", feature_dim=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    assert {"mean", "std"} <= set(model.state_dict())
    x = _images()
    expected = model.embed(model.backbone((x - 0.5) / torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1)))
    torch.testing.assert_close(model.embedding(x), expected)
    with pytest.raises(ValueError, match=r"std must be > 0"):
        BladesModel(None, backbone="small", std=(1.0, 0.0, 1.0))
