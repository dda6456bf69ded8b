"""Feature extraction: batching, the on-disk cache and its keys, device/mode restoration, bad files."""

import numpy as np
import pytest
import torch
from PIL import Image

from bfdkern.data.transforms import to_tensor
from bfdkern.detect.features import FeatureCache, encoder_fingerprint, extract_features, image_features
from bfdkern.detect.perturb import Perturbation
from bfdkern.detect.preprocess import ImageError, Preprocessing
from tests.detect.tiny_encoder import TinyEncoder

PREP = Preprocessing(jpeg_quality=90, size=32)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_features_equal_the_encoder_on_preprocessed_images(images):
    enc = TinyEncoder()
    feats = extract_features(enc, images, batch_size=3, device="cpu", progress=False, preprocessing=PREP)
    assert feats.shape == (7, 16) and feats.dtype == np.float32
    x = torch.stack([to_tensor(PREP.load(p), size=32) for p in images])
    with torch.no_grad():
        np.testing.assert_allclose(feats, enc.features(x).numpy(), rtol=1e-5, atol=1e-6)


def test_cache_hits_skip_the_encoder_and_keys_follow_weights_settings_and_content(images, tmp_path):
    cache = tmp_path / "cache"
    enc = TinyEncoder()
    first = extract_features(enc, images, 4, "cpu", cache, preprocessing=PREP, progress=False)
    assert enc.seen == 7
    again = extract_features(enc, images, 4, "cpu", cache, preprocessing=PREP, progress=False)
    assert enc.seen == 7  # all from the cache
    np.testing.assert_array_equal(first, again)
    # A copy under another name is the same content: a hit.
    copy = tmp_path / "copy.png"
    copy.write_bytes(images[0].read_bytes())
    extract_features(enc, [copy], 4, "cpu", cache, preprocessing=PREP, progress=False)
    assert enc.seen == 7
    # Changed content, changed preprocessing, changed weights: misses.
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(images[1])
    extract_features(enc, images[:2], 4, "cpu", cache, preprocessing=PREP, progress=False)
    assert enc.seen == 8
    extract_features(
        enc, images[:2], 4, "cpu", cache, preprocessing=Preprocessing(jpeg_quality=80, size=32), progress=False
    )
    assert enc.seen == 10
    other = TinyEncoder(seed=1)
    assert encoder_fingerprint(other) != encoder_fingerprint(enc)
    out = extract_features(other, images[:2], 4, "cpu", cache, preprocessing=PREP, progress=False)
    assert other.seen == 2 and not np.allclose(out, first[:2])


def test_corrupt_cache_entry_is_recomputed(images, tmp_path):
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path / "c", encoder_fingerprint(enc), PREP)
    extract_features(enc, images[:1], 1, "cpu", tmp_path / "c", preprocessing=PREP, progress=False)
    (entry,) = cache.dir.rglob("*.npy")
    entry.write_bytes(b"garbage")
    out = extract_features(enc, images[:1], 1, "cpu", tmp_path / "c", preprocessing=PREP, progress=False)
    assert enc.seen == 2 and np.isfinite(out).all()


def test_fingerprint_ignores_device_and_load_path():
    a, b = TinyEncoder(), TinyEncoder()
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    assert encoder_fingerprint(a) == encoder_fingerprint(b)
    with torch.no_grad():
        b.proj.bias[0] += 1e-6
    assert encoder_fingerprint(a) != encoder_fingerprint(b)


def test_model_mode_is_restored(images):
    enc = TinyEncoder().train()
    extract_features(enc, images[:2], device="cpu", preprocessing=PREP, progress=False)
    assert enc.training


def test_unreadable_image_is_named(images, tmp_path):
    bad = tmp_path / "img" / "zz_truncated.png"
    bad.write_bytes(images[0].read_bytes()[:60])
    with pytest.raises(ImageError, match="zz_truncated.png"):
        extract_features(TinyEncoder(), [*images, bad], device="cpu", preprocessing=PREP, progress=False)
    with pytest.raises(ValueError, match="no images"):
        extract_features(TinyEncoder(), [], device="cpu", preprocessing=PREP, progress=False)


def test_unreadable_files_are_skipped_with_reasons_and_the_rest_kept(images, tmp_path):
    cut = tmp_path / "img" / "cut.png"
    cut.write_bytes(images[0].read_bytes()[:60])
    text = tmp_path / "img" / "text.png"
    text.write_text("hello")
    paths = [cut, *images[:3], text, images[3], tmp_path / "gone.png"]
    enc = TinyEncoder()
    got = image_features(enc, paths, batch_size=2, device="cpu", preprocessing=PREP, progress=False)
    assert got.paths == [*images[:3], images[3]] and got.index.tolist() == [1, 2, 3, 5]
    assert [(s.path.name, s.reason) for s in got.skipped] == [
        ("cut.png", "truncated or corrupt"),
        ("text.png", "not an image"),
        ("gone.png", "missing"),
    ]
    strict = extract_features(enc, images[:4], device="cpu", preprocessing=PREP, progress=False)
    np.testing.assert_allclose(got.features, strict, rtol=1e-5, atol=1e-6)  # other batches, same features
    assert got.digests[0] == __import__("hashlib").sha256(images[0].read_bytes()).hexdigest()


def test_an_unwritable_cache_is_a_warning_not_a_failure(images, tmp_path):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot be written"):
        out = extract_features(
            TinyEncoder(), images[:3], device="cpu", cache_dir=blocked, preprocessing=PREP, progress=False
        )
    assert out.shape == (3, 16)


def test_perturbation_is_applied_after_the_preprocessing_and_keys_the_cache(images, tmp_path):
    enc = TinyEncoder()
    blur = Perturbation.parse("blur=1.5")
    cache = tmp_path / "cache"
    clean = extract_features(enc, images[:3], device="cpu", cache_dir=cache, preprocessing=PREP, progress=False)
    blurred = extract_features(
        enc, images[:3], device="cpu", cache_dir=cache, preprocessing=PREP, perturbation=blur, progress=False
    )
    assert enc.seen == 6 and not np.allclose(clean, blurred)  # the clean entries were not reused
    x = torch.stack([to_tensor(blur.apply(PREP.load(p)), size=32) for p in images[:3]])
    with torch.no_grad():
        np.testing.assert_allclose(blurred, enc.features(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_gpu_features_match_cpu(images):
    enc = TinyEncoder()
    cpu = extract_features(enc, images, device="cpu", preprocessing=PREP, progress=False)
    gpu = extract_features(enc, images, device="cuda", preprocessing=PREP, progress=False)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)
    assert next(enc.parameters()).device.type == "cpu"
