"""Detector files read back are validated: wrong structure, wrong types, missing fields, NaN thresholds or
weights, shapes that do not fit, flipped bytes each give one line naming the file and the field (a NaN threshold
no longer labels everything real); files written before checksums still load."""

import json

import numpy as np
import pytest

from bfdkern.detect.binary import BinaryDetector
from bfdkern.detect.oneclass import OneClassDetector
from bfdkern.detect.preprocess import Preprocessing
from bfdkern.detect.serialization import META_KEY, DetectorFileError, content_checksum, load_detector, save_detector
from tests.helpers import flip_each_byte_check

ENCODER = {"fingerprint": "ab" * 32, "source": "/runs/a/encoder.pt", "config": {"backbone": "small"}}
PREP = Preprocessing(jpeg_quality=85, size=64)


def _features(n, d=6, shift=0.0, seed=0):
    x = np.random.default_rng(seed).normal(0, 1, (n, d))
    x[:, 0] += shift
    return x


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("detector_files")
    oc = OneClassDetector(n_components=2, max_iter=20).fit(_features(60))
    bc = BinaryDetector(hidden=8, max_epochs=3).fit(_features(20), _features(10, shift=2.0, seed=1), device="cpu")
    return {
        "oneclass": save_detector(root / "oc.npz", oc, encoder=ENCODER, preprocessing=PREP).read_bytes(),
        "binary": save_detector(root / "bc.npz", bc, encoder=ENCODER, preprocessing=PREP).read_bytes(),
    }


def _read(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads(str(arrays.pop(META_KEY))), arrays


def _write(path, header, arrays, checksum=True):
    if checksum:
        header["checksum"] = content_checksum(header, arrays)
    np.savez(path, **{META_KEY: np.array(json.dumps(header))}, **arrays)


def _damaged(tmp_path, files, kind, change, checksum=True):
    path = tmp_path / f"{kind}.npz"
    path.write_bytes(files[kind])
    header, arrays = _read(path)
    change(header, arrays)
    _write(path, header, arrays, checksum)
    return path


def _header(dotted, value):
    def change(header, arrays):
        *parents, last = dotted.split(".")
        for p in parents:
            header = header[p]
        header[last] = value

    return change


def _array(name, value):
    def change(header, arrays):
        arrays[name] = value(arrays[name]) if callable(value) else value

    return change


def _nan_at_first(a):
    a = a.copy()
    a.flat[0] = np.nan
    return a


@pytest.mark.parametrize(
    "kind,change,message",
    [
        ("oneclass", _header("threshold", float("nan")), r"field threshold: nan is not finite"),
        ("oneclass", _header("threshold", "low"), r"field threshold: expected a number, got str"),
        ("oneclass", lambda h, a: h.pop("threshold"), r"field threshold: missing"),
        ("oneclass", _header("params", [1, 2]), r"field params: expected a dict, got list"),
        ("oneclass", _header("params.n_components", "2"), r"field params.n_components: expected an integer"),
        ("oneclass", _header("params.covariance_type", "blocky"), r"field params.covariance_type: 'blocky' is not"),
        ("oneclass", _header("encoder", "me"), r"field encoder: expected a dict, got str"),
        ("oneclass", _header("encoder.fingerprint", "abc"), r"field encoder.fingerprint: expected 64 lowercase hex"),
        ("oneclass", _header("encoder.fingerprint", ["ab"]), r"field encoder.fingerprint: expected a string"),
        ("oneclass", _header("preprocessing.size", [224]), r"field preprocessing.size: expected an integer"),
        ("oneclass", _header("preprocessing.face_crop", "yes"), r"field preprocessing.face_crop: expected true or"),
        ("oneclass", _header("preprocessing.jpeg_quality", 400), r"field preprocessing.jpeg_quality: 400 is above"),
        ("oneclass", _array("means", _nan_at_first), r"field arrays.means: 1 of 12 values are NaN or inf"),
        ("oneclass", _array("weights", np.array([0.5, 0.6])), r"field arrays.weights: mixing weights must be >= 0"),
        ("oneclass", _array("weights", np.array([1.0])), r"field arrays: weights \(1,\) and means \(2, 6\) do not"),
        (
            "oneclass",
            _array("precisions_cholesky", lambda a: a[:, :3]),
            r"field arrays.precisions_cholesky: expected shape \(2, 6, 6\) \(full",
        ),
        ("oneclass", _array("means", lambda a: a.astype(np.int64)), r"field arrays.means: expected a 2-d floating"),
        ("oneclass", _array("extra", np.zeros(2)), r"field arrays: unexpected arrays \['extra'\]"),
        ("oneclass", lambda h, a: a.pop("means"), r"field arrays.means: missing"),
        ("binary", _array("mlp.2.weight", lambda a: a[:, :4]), r"field arrays: the MLP layers do not fit together"),
        ("binary", _array("mlp.0.bias", _nan_at_first), r"field arrays.mlp.0.bias: 1 of 8 values are NaN"),
        ("binary", _header("params.hidden", 9), r"field params.hidden: 9, but the first layer has 8 units"),
        ("binary", _header("threshold", 0.9), r"field threshold: the binary detector decides at P\(fake\) > 0.5"),
        ("binary", _header("kind", "ternary"), r"unknown detector kind 'ternary'"),
        ("binary", _header("kind", ["binary"]), r"unknown detector kind \['binary'\]"),
    ],
)
def test_damaged_fields_are_named(kind, change, message, files, tmp_path):
    path = _damaged(tmp_path, files, kind, change)
    with pytest.raises(DetectorFileError, match=rf"^{path}: ({message})") as info:
        load_detector(path)
    assert "\n" not in str(info.value)


def test_a_nan_threshold_no_longer_calls_everything_real(files, tmp_path):
    path = _damaged(tmp_path, files, "oneclass", _header("threshold", float("nan")))
    with pytest.raises(DetectorFileError):
        load_detector(path)


def test_changed_content_with_a_valid_zip_fails_the_checksum(files, tmp_path):
    path = _damaged(tmp_path, files, "oneclass", _array("means", lambda a: a + 1e-9), checksum=False)
    with pytest.raises(DetectorFileError, match=rf"^{path}: checksum mismatch"):
        load_detector(path)


def test_any_flipped_byte_is_an_error_naming_the_file_or_changes_nothing(files, tmp_path):
    path = tmp_path / "oc.npz"
    path.write_bytes(files["oneclass"])
    reference, ref_header = load_detector(path)

    def intact(loaded):
        det, header = loaded
        return header == ref_header and np.array_equal(det.means, reference.means)

    assert flip_each_byte_check(path, load_detector, intact, n=200, seed=1) > 150


def test_files_without_checksum_or_relative_path_still_load(files, tmp_path):
    def old(header, arrays):
        header.pop("checksum")
        header["encoder"].pop("relative_source")

    path = _damaged(tmp_path, files, "binary", old, checksum=False)
    det, header = load_detector(path)
    assert det.kind == "binary" and "relative_source" not in det.encoder
    path = _damaged(
        tmp_path, files, "binary", lambda h, a: (h.pop("checksum"), h.update(threshold=float("inf"))), False
    )
    with pytest.raises(DetectorFileError, match="field threshold: inf is not finite"):
        load_detector(path)


def test_a_header_that_is_not_one_string_is_named(files, tmp_path):
    path = tmp_path / "oc.npz"
    path.write_bytes(files["oneclass"])
    _, arrays = _read(path)
    np.savez(path, **{META_KEY: np.array(["{}", "{}"])}, **arrays)
    with pytest.raises(DetectorFileError, match=r"field __meta__: expected one JSON string"):
        load_detector(path)
