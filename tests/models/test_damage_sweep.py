"""Every field of every file bfdkern reads back, replaced by a value of every wrong type (None, a negative
number, NaN, text, a list, a dict, a tensor): each load either succeeds or fails with one line naming the file
(a ValueError), never with another exception (``KeyError: 'trainer'``, ``TypeError: unhashable type``,
``AttributeError: 'int' object has no attribute 'shape'``). Encoder files, run checkpoints, detector files."""

import copy
import json

import numpy as np
import pytest
import torch

from bfdkern.detect import BinaryDetector, OneClassDetector, Preprocessing, load_detector, save_detector
from bfdkern.detect.encoder import load_encoder
from bfdkern.detect.serialization import META_KEY, content_checksum
from bfdkern.models import BladesModel, save_model
from bfdkern.models.files import with_checksum
from bfdkern.tasks import blades_spec
from bfdkern.training.checkpoint import load_checkpoint, save_checkpoint
from tests.training.test_checkpoint import trainer_state

WRONG = [None, -5, float("nan"), "x", [1, "a"], {"a": 1}, torch.zeros(2)]


def _paths(tree, prefix=()):
    """Every path into a nested payload (dict keys, list indices of short lists)."""
    if prefix:
        yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(tree, list) and len(tree) <= 12:
        for i, value in enumerate(tree):
            yield from _paths(value, (*prefix, i))


def _replaced(payload, path, value):
    out = copy.deepcopy(payload)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _sweep(payload, write, load, path) -> int:
    tried = 0
    for where in list(_paths(payload)):
        for value in WRONG:
            write(_replaced(payload, where, value))
            try:
                load(path)
            except ValueError as exc:
                assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), (where, value, str(exc))
            except Exception as exc:
                pytest.fail(f"{'.'.join(map(str, where))} = {value!r}: {type(exc).__name__}: {exc}")
            tried += 1
    return tried


def test_encoder_files(tmp_path):
    model = BladesModel(blades_spec().subset(["iso", "make", "manipulated"]), backbone="small", feature_dim=4)
    extra = {
        "steps": 1,
        "lambdas": [1.0] * 3,
        "tasks": ["iso", "make", "manipulated"],
        "pretrain_config": {"image_size": 32},
    }
    clean = torch.load(save_model(tmp_path / "clean.pt", model, extra=extra), weights_only=True)
    clean["state_dict"] = dict(list(clean["state_dict"].items())[:4])  # a few entries stand for all
    path = tmp_path / "encoder.pt"
    write = lambda payload: torch.save(with_checksum(payload), path)
    assert _sweep(clean, write, load_encoder, path) > 300


def test_run_checkpoints(tmp_path):
    extra = {
        "initial_lambdas": [1.0] * 4,
        "chance": [0.5] * 4,
        "identity": {"images": 3, "steps_per_epoch": 1, "total_steps": 1},
    }
    clean = torch.load(save_checkpoint(tmp_path / "c.pt", trainer_state(1), {"tr": (0, 1)}, extra), weights_only=True)
    path = tmp_path / "checkpoint.pt"
    write = lambda payload: torch.save(with_checksum(payload), path)
    assert _sweep(clean, write, load_checkpoint, path) > 500


@pytest.mark.parametrize("kind", ["oneclass", "binary"])
def test_detector_files(kind, tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 4))
    if kind == "oneclass":
        det = OneClassDetector(n_components=2).fit(x)
    else:
        det = BinaryDetector(hidden=4, max_epochs=2).fit(x, x + 1, device="cpu")
    encoder = {"fingerprint": "ab" * 32, "source": "/runs/a/encoder.pt"}
    saved = save_detector(tmp_path / "clean.npz", det, encoder=encoder, preprocessing=Preprocessing())
    with np.load(saved, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays.pop(META_KEY)))
    path = tmp_path / "detector.npz"

    def write(h):
        h = json.loads(json.dumps(h, default=lambda o: o.tolist()))  # a JSON header cannot hold a tensor
        h["checksum"] = content_checksum(h, arrays)
        np.savez(path, **{META_KEY: np.array(json.dumps(h))}, **arrays)

    assert _sweep(header, write, load_detector, path) > 150
