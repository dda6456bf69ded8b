"""The binary MLP detector: few fakes, early stopping, the report, the decision rule."""

import numpy as np
import pytest
import torch

from bfdkern.detect.binary import BinaryDetector, stratified_split


def _features(n, shift, d=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, d))
    x[:, 0] += shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_few_fakes_train_a_useful_classifier_and_the_report_counts_them():
    real, fake = _features(1000, 0.0, seed=1), _features(200, 3.0, seed=2)
    det = BinaryDetector(hidden=64, max_epochs=60, patience=5, seed=0).fit(real, fake, device="cpu")
    r = det.report
    assert (r["n_real_train"], r["n_real_val"], r["n_fake_train"], r["n_fake_val"]) == (800, 200, 160, 40)
    assert 1 <= r["best_epoch"] <= r["epochs"] <= 60
    assert r["best_val_loss"] == pytest.approx(min(r["val_loss_history"]))
    # Balanced accuracy on fresh data: well above chance despite 5:1 imbalance.
    p_real = det.predict(_features(500, 0.0, seed=3))
    p_fake = det.predict(_features(500, 3.0, seed=4))
    assert 0.5 * ((1 - p_real.mean()) + p_fake.mean()) > 0.85
    assert det.score(_features(500, 3.0, seed=4)).mean() > det.score(_features(500, 0.0, seed=3)).mean()


def test_early_stopping_keeps_the_best_epoch():
    # Pure noise: validation loss cannot keep improving, so training stops long before max_epochs.
    real, fake = _features(300, 0.0, seed=5), _features(60, 0.0, seed=6)
    det = BinaryDetector(hidden=32, max_epochs=500, patience=4).fit(real, fake, device="cpu")
    r = det.report
    assert r["epochs"] == r["best_epoch"] + 4 < 500


def test_architecture_and_decision_rule():
    det = BinaryDetector(hidden=1536, max_epochs=1).fit(_features(20, 0, d=768), _features(20, 1, d=768), device="cpu")
    layers = [m for m in det.mlp]
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert (layers[0].in_features, layers[0].out_features, layers[2].out_features) == (768, 1536, 2)
    x = _features(10, 0.5, d=768)
    with torch.no_grad():
        logits = det.mlp(torch.from_numpy(x).float())
    np.testing.assert_allclose(det.score(x), torch.softmax(logits.double(), 1)[:, 1].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(det.predict(x), logits.argmax(1).numpy())
    np.testing.assert_array_equal(det.decide(np.array([0.5, 0.5000001, 0.2])), [0, 1, 0])


def test_stratified_split_keeps_both_classes():
    y = np.r_[np.zeros(10), np.ones(3)].astype(int)
    tr, va = stratified_split(y, 0.2, np.random.default_rng(0))
    assert set(y[va]) == {0, 1} and set(y[tr]) == {0, 1}
    assert len(set(tr) | set(va)) == 13 and not set(tr) & set(va)


def test_bad_inputs():
    with pytest.raises(ValueError, match="fake features: need at least 2"):
        BinaryDetector().fit(_features(10, 0), _features(1, 1))
    with pytest.raises(ValueError, match="32-d but fake features are 8-d"):
        BinaryDetector().fit(_features(10, 0), _features(10, 1, d=8))
    with pytest.raises(ValueError, match="val_fraction"):
        BinaryDetector(val_fraction=1.0)


def test_validation_curve_is_reported_and_training_stops_early():
    real, fake = _features(400, 0.0, seed=7), _features(100, 2.5, seed=8)
    det = BinaryDetector(hidden=32, max_epochs=300, patience=5).fit(real, fake, device="cpu")
    r = det.report
    h = r["history"]
    assert [e["epoch"] for e in h] == list(range(r["epochs"] + 1))  # epoch 0 = before training
    assert h[0]["train_loss"] is None and all(e["train_loss"] > 0 for e in h[1:])
    assert r["stopped_early"] and r["epochs"] < 300
    best = min(h[1:], key=lambda e: e["val_loss"])
    assert best["epoch"] == r["best_epoch"] and best["val_loss"] == pytest.approx(r["best_val_loss"])
    assert best["val_auc"] > 0.9 and 0.5 < best["val_balanced_acc"] <= 1.0
    # The curve's AUC is the AUC of the kept weights on the validation split.
    assert h[0]["val_auc"] < best["val_auc"]
