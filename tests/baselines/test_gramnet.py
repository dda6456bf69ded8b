"""GramNet: the Gram matrix against a float64 reference and its layout invariance, ImageNet-style trunk
weights loading, training on a handful of simulator images, and an exact round trip of its file."""

import numpy as np
import pytest
import torch
import torchvision

from bfdkern.detect import list_images
from bfdkern.detect.baselines.cnnd import CNNDetector
from bfdkern.detect.baselines.gramnet import GramNetDetector, GramResNet, gram_matrix


def test_gram_matrix_matches_reference_and_ignores_layout():
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    reference = torch.einsum("bchw,bdhw->bcd", x, x) / 24
    torch.testing.assert_close(gram_matrix(x), reference)
    shuffled = x.reshape(2, 5, 24)[:, :, torch.randperm(24)].reshape(2, 5, 4, 6)
    torch.testing.assert_close(gram_matrix(shuffled), reference)  # texture statistics, not positions


def test_network_shapes_and_trunk_weights(tmp_path):
    net = GramResNet("resnet18")
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 1) and len(net.gram) == 4
    trunk = torchvision.models.resnet18(weights=None)
    torch.save(trunk.state_dict(), tmp_path / "r18.pth")
    det = GramNetDetector(arch="resnet18", size=32, backbone_weights=tmp_path / "r18.pth")
    torch.testing.assert_close(det.net.layer3[0].conv1.weight, trunk.layer3[0].conv1.weight)


def test_trains_scores_and_round_trips(eval_sets, tmp_path):
    real, fake = list_images(eval_sets / "fit")[:8], list_images(eval_sets / "fake")[:8]
    det = GramNetDetector(arch="resnet18", size=32, seed=1).fit(real, fake, epochs=1, batch_size=8, progress=False)
    assert det.augment.blur_p == 0 and det.augment.jpeg_p == 0
    test = list_images(eval_sets / "real")[:4] + list_images(eval_sets / "fake")[8:]
    scores = det.score_files(test)
    assert scores.shape == (8,) and np.all((scores > 0) & (scores < 1))
    loaded = GramNetDetector.load(det.save(tmp_path / "gramnet.pt"))
    np.testing.assert_array_equal(loaded.score_files(test), scores)
    with pytest.raises(ValueError, match="not a cnnd detector file"):
        CNNDetector.load(tmp_path / "gramnet.pt")
