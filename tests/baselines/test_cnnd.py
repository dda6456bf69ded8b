"""CNND: blur and JPEG each with probability 0.5 (checked statistically), training on a handful of simulator
images, and an exact round trip of its file."""

import numpy as np
import pytest
from PIL import Image

from bfdkern.detect import evaluate_scores, list_images
from bfdkern.detect.baselines.cnnd import Augmentation, BlurJpeg, CNNDetector


def test_augmentation_probabilities():
    rng = np.random.default_rng(0)
    draws = [BlurJpeg().draw(rng) for _ in range(4000)]
    blur = np.array([d.blur_sigma is not None for d in draws])
    jpeg = np.array([d.jpeg_quality is not None for d in draws])
    se = np.sqrt(0.25 / len(draws))  # standard error of a p = 0.5 frequency
    assert abs(blur.mean() - 0.5) < 4 * se and abs(jpeg.mean() - 0.5) < 4 * se
    assert abs((blur & jpeg).mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / len(draws))  # independent
    sigmas = np.array([d.blur_sigma for d in draws if d.blur_sigma is not None])
    qualities = np.array([d.jpeg_quality for d in draws if d.jpeg_quality is not None])
    assert sigmas.min() >= 0 and sigmas.max() <= 3 and abs(sigmas.mean() - 1.5) < 0.1
    assert qualities.min() == 30 and qualities.max() == 100


def test_augmentation_changes_the_image():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    pixels = np.asarray(image, dtype=np.float64)
    assert np.array_equal(np.asarray(BlurJpeg.apply(image, Augmentation(None, None))), pixels)
    blurred = np.asarray(BlurJpeg.apply(image, Augmentation(2.0, None)), dtype=np.float64)
    assert blurred.std() < 0.6 * pixels.std()  # blur removes the noise's variance
    jpeg = np.asarray(BlurJpeg.apply(image, Augmentation(None, 30)), dtype=np.float64)
    assert 1 < np.abs(jpeg - pixels).mean() < 60
    with pytest.raises(ValueError, match="blur_p must be in"):
        BlurJpeg(blur_p=1.5)


def test_trains_scores_and_round_trips(eval_sets, tmp_path):
    real, fake = list_images(eval_sets / "fit")[:8], list_images(eval_sets / "fake")[:8]
    det = CNNDetector(arch="resnet18", size=32, seed=0).fit(real, fake, epochs=1, batch_size=8, progress=False)
    test_real, test_fake = list_images(eval_sets / "real")[:4], list_images(eval_sets / "fake")[8:]
    scores = det.score_files(test_real + test_fake)
    assert scores.shape == (8,) and np.all((scores > 0) & (scores < 1))
    result = evaluate_scores(det, scores[:4], {"nocam": scores[4:]})
    assert result["positive_class"] == "fake" and 0 <= result["rows"][0]["auc"] <= 1
    loaded = CNNDetector.load(det.save(tmp_path / "cnnd.pt"))
    assert loaded.params == det.params
    np.testing.assert_array_equal(loaded.score_files(test_real + test_fake), scores)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt: not a readable cnnd detector file"):
        CNNDetector.load(tmp_path / "junk.pt")
