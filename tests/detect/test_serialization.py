"""Detector files: exact round trips, no pickle, clear errors (wrong file, wrong encoder)."""

import json
import os
import zipfile

import numpy as np
import pytest

from bfdkern.detect.binary import BinaryDetector
from bfdkern.detect.oneclass import OneClassDetector
from bfdkern.detect.preprocess import Preprocessing
from bfdkern.detect.serialization import DetectorFileError, check_encoder, load_detector, save_detector

ENCODER = {"fingerprint": "ab" * 32, "source": "/runs/a/encoder.pt", "config": {"backbone": "small"}}
PREP = Preprocessing(jpeg_quality=85, size=64)


def _features(n, d=12, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, d))
    x[:, 0] += shift
    return x


@pytest.fixture(scope="module")
def oneclass():
    return OneClassDetector(n_components=3, max_iter=30, false_alarm_rate=0.1).fit(_features(200))


@pytest.fixture(scope="module")
def binary():
    return BinaryDetector(hidden=16, max_epochs=5).fit(_features(60), _features(20, shift=2.0, seed=1), device="cpu")


@pytest.mark.parametrize("name", ["oneclass", "binary"])
def test_round_trip_gives_identical_scores(name, request, tmp_path):
    det = request.getfixturevalue(name)
    path = save_detector(tmp_path / "det", det, encoder=ENCODER, preprocessing=PREP)
    assert path.name == "det.npz"
    loaded, header = load_detector(path)
    assert type(loaded) is type(det)
    x = _features(30, seed=5, shift=1.0)
    np.testing.assert_array_equal(loaded.score(x), det.score(x))
    np.testing.assert_array_equal(loaded.predict(x), det.predict(x))
    assert loaded.threshold == det.threshold and loaded.report == det.report
    relative = os.path.relpath("/runs/a/encoder.pt", tmp_path.resolve())
    assert loaded.encoder == {**ENCODER, "relative_source": relative} and loaded.preprocessing == PREP
    assert header["positive_class"] == det.positive_class
    # Nothing in the file needs pickle.
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_a_pickled_array_is_refused(tmp_path, oneclass):
    path = save_detector(tmp_path / "det.npz", oneclass, encoder=ENCODER, preprocessing=PREP)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["weights"] = np.array([{"evil": 1}], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(DetectorFileError, match="evil.npz: not a detector file"):
        load_detector(tmp_path / "evil.npz")


def test_bad_files_are_named(tmp_path, oneclass):
    with pytest.raises(DetectorFileError, match="missing.npz: no such detector file"):
        load_detector(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DetectorFileError, match="text.npz: not a detector file"):
        load_detector(tmp_path / "text.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(DetectorFileError, match="plain.npz: not a bfdkern detector file"):
        load_detector(tmp_path / "plain.npz")
    # A future format version.
    path = save_detector(tmp_path / "v2.npz", oneclass, encoder=ENCODER, preprocessing=PREP)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["__meta__"]))
    header["format"] = "bfdkern.detector/99"
    arrays = {k[:-4]: np.load(path)[k[:-4]] for k in members if k != "__meta__.npy"}
    np.savez(path, __meta__=np.array(json.dumps(header)), **arrays)
    with pytest.raises(DetectorFileError, match="format 'bfdkern.detector/99', expected 'bfdkern.detector/1'"):
        load_detector(path)


def test_wrong_encoder_is_a_clear_error(tmp_path, oneclass):
    path = save_detector(tmp_path / "det.npz", oneclass, encoder=ENCODER, preprocessing=PREP)
    det, header = load_detector(path)
    check_encoder(path, det, ENCODER["fingerprint"], "/runs/a")
    with pytest.raises(
        DetectorFileError, match=r"det.npz: fitted on features of encoder abababababab .*/runs/b is 0123"
    ):
        check_encoder(path, header, "0123" * 16, "/runs/b")


def test_fit_hashes_round_trip(oneclass, tmp_path):
    import hashlib

    det = oneclass
    digests = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
    path = save_detector(
        tmp_path / "d.npz", det, encoder=ENCODER, preprocessing=PREP, fit_hashes=[*digests, digests[0]]
    )
    loaded, _ = load_detector(path)
    assert loaded.fit_hashes == frozenset(digests)
    plain = save_detector(tmp_path / "plain.npz", det, encoder=ENCODER, preprocessing=PREP)
    assert load_detector(plain)[0].fit_hashes == frozenset()
