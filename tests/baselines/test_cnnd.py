"""CNND: blur and JPEG each with probability 0.5 (checked statistically), training on a handful of simulator
images (the same for any number of decoding threads), an exact round trip of its file, and `bfdkern
fit-baseline` for CNND and GramNet."""

import numpy as np
import pytest
import torch
from PIL import Image

from bfdkern import cli
from bfdkern.detect import evaluate_scores, list_images
from bfdkern.detect.baselines import GramNetDetector
from bfdkern.detect.baselines.cnnd import Augmentation, BlurJpeg, CNNDetector
from bfdkern.models import IMAGENET_MEAN, IMAGENET_STD


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
    with pytest.raises(ValueError, match="junk.pt: cannot be read as a weights-only torch cnnd detector"):
        CNNDetector.load(tmp_path / "junk.pt")


def test_training_is_the_same_for_any_number_of_workers(eval_sets):
    """Batches are decoded and augmented on threads; the draws follow the seed in batch order."""
    real, fake = list_images(eval_sets / "fit")[:6], list_images(eval_sets / "fake")[:6]
    nets = [
        CNNDetector(arch="resnet18", size=32, seed=2).fit(real, fake, epochs=2, batch_size=5, workers=w, progress=False)
        for w in (1, 3)
    ]
    for (name, a), b in zip(nets[0].net.state_dict().items(), nets[1].net.state_dict().values()):
        assert torch.equal(a, b), name


def test_an_unreadable_training_image_is_named(eval_sets, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    real = list_images(eval_sets / "fit")[:3] + [bad]
    with pytest.raises(ValueError, match="broken.jpg"):
        CNNDetector(arch="resnet18", size=32).fit(real, list_images(eval_sets / "fake")[:4], epochs=1, progress=False)


def test_fit_baseline_command_trains_and_evaluate_scores_it(eval_sets, tmp_path, capsys):
    out = tmp_path / "g.pt"
    common = ["--real", str(eval_sets / "fit"), "--fake", str(eval_sets / "fake"), "--arch", "resnet18"]
    common += ["--size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--quiet"]
    assert cli.main(["fit-baseline", "gramnet", *common, "-o", str(out)]) == 0
    assert "gramnet: resnet18 trained 1 epochs on 16 real and 12 fake images" in capsys.readouterr().out
    assert GramNetDetector.load(out).params == {
        "arch": "resnet18",
        "size": 32,
        "seed": 0,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    result = tmp_path / "eval"
    argv = ["evaluate", "--detector", f"gramnet={out}", "--real", str(eval_sets / "real")]
    assert cli.main([*argv, "--fake", f"nocam={eval_sets / 'fake'}", "--out", str(result), "--quiet"]) == 0
    assert (result / "results.csv").is_file()
    # A file (or training-free detector) given alone is evaluated like one given among several.
    argv = ["evaluate", "--detector", str(out), "--real", str(eval_sets / "real"), "--quiet"]
    assert cli.main([*argv, "--fake", f"nocam={eval_sets / 'fake'}", "--out", str(tmp_path / "alone")]) == 0
    argv[2] = "hu21"
    assert cli.main([*argv, "--fake", f"nocam={eval_sets / 'fake'}", "--out", str(tmp_path / "hu21")]) == 0
    assert (tmp_path / "alone" / "results.csv").is_file() and (tmp_path / "hu21" / "results.csv").is_file()
    capsys.readouterr()

    assert cli.main(["fit-baseline", "cnnd", *common, "-o", str(out), "--backbone-weights", "nowhere.pth"]) == 2
    assert "nowhere.pth: no such state dict file (--backbone-weights)" in capsys.readouterr().err
    assert cli.main(["fit-baseline", "cnnd", *common, "-o", str(out), "--epochs", "0"]) == 2
    assert "epochs must be >= 1, got 0" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["fit-baseline", "cnnd", *common[:2], "--fake", str(empty), "-o", str(out)]) == 2
    assert "empty" in capsys.readouterr().err


def test_fit_baseline_skips_unreadable_images_before_training(eval_sets, tmp_path, capsys):
    reals = tmp_path / "reals"
    reals.mkdir()
    for p in list_images(eval_sets / "fit")[:6]:
        (reals / p.name).write_bytes(p.read_bytes())
    (reals / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    argv = ["fit-baseline", "cnnd", "--real", str(reals), "--fake", str(eval_sets / "fake"), "--arch", "resnet18"]
    argv += [
        "--size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "6",
        "--device",
        "cpu",
        "--quiet",
        "-o",
        str(tmp_path / "c.pt"),
    ]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "trained 1 epochs on 6 real and 12 fake images" in captured.out
    assert "skipped 1 (not an image: 1) of 19 images" in captured.err and "broken.jpg" in captured.err
    assert cli.main([*argv, "--strict"]) == 3
