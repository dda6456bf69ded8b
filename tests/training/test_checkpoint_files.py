"""Run checkpoints read back are validated: wrong structure, wrong types, missing fields, NaN weights or lambda,
and flipped bytes give one line naming the file and the field (not ``KeyError: 'trainer'`` or a resume that
trains on NaN); checkpoints written before checksums still load."""

import pytest
import torch

from bfdkern.models.files import SavedFileError, with_checksum
from bfdkern.training.checkpoint import load_checkpoint, save_checkpoint
from tests.helpers import flip_each_byte_check
from tests.training.test_checkpoint import trainer_state


@pytest.fixture(scope="module")
def state():
    return trainer_state(steps=2)


@pytest.fixture
def checkpoint(state, tmp_path):
    extra = {
        "initial_lambdas": [1.0] * 4,
        "chance": [0.5, float("nan"), 0.5, 0.5],
        "identity": {"images": 8, "steps_per_epoch": 1, "total_steps": 2},
    }
    return save_checkpoint(tmp_path / "checkpoint.pt", state, {"tr": (0, 2), "val": (0, 2)}, extra)


def _rewrite(path, change, checksum=True):
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(with_checksum(payload) if checksum else payload, path)


def _nan(tensor_path):
    def change(payload):
        *parents, last = tensor_path
        for p in parents:
            payload = payload[p]
        payload[last] = payload[last].clone()
        payload[last].view(-1)[0] = float("nan")

    return change


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p.pop("trainer"), r"field trainer: missing"),
        (lambda p: p.update(trainer=[1, 2]), r"field trainer: expected a dict, got list"),
        (lambda p: p["trainer"].update(steps="3"), r"field trainer.steps: expected an integer, got str '3'"),
        (lambda p: p["trainer"].pop("optimizer"), r"field trainer.optimizer: missing"),
        (lambda p: p["trainer"].update(lambda_raw=3), r"field trainer.lambda_raw: expected a tensor, got int 3"),
        (lambda p: p["trainer"].update(lambda_raw=torch.ones(2, 2)), r"field trainer.lambda_raw: expected 1 dim"),
        (lambda p: p["trainer"].update(lambda_raw=torch.ones(3)), r"field trainer.lambda_raw: 3 weights for 4 tasks"),
        (_nan(("trainer", "lambda_raw")), r"field trainer.lambda_raw: 1 of 4 values are NaN or inf"),
        (_nan(("trainer", "model", "net.2.bias")), r"field trainer.model.net.2.bias: 1 of 8 values are NaN"),
        (_nan(("trainer", "optimizer", "state", 0, "exp_avg")), r"field trainer.optimizer.state.0.exp_avg: 1 of"),
        (lambda p: p["trainer"]["spec"].update(tasks="all"), r"field trainer.spec.tasks: expected a list of tasks"),
        (lambda p: p["trainer"].update(rng_cpu=torch.zeros(3)), r"field trainer.rng_cpu: expected a uint8"),
        (lambda p: p["streams"].update(tr=[0]), r"field streams.tr: expected \[epoch, batch\]"),
        (lambda p: p["streams"].update(tr={"a": 1}), r"field streams.tr: expected \[epoch, batch\]"),
        (lambda p: p["random"]["numpy"].update(keys=5), r"field random.numpy.keys: expected a tensor"),
        (lambda p: p["random"].pop("python"), r"field random.python.version: missing"),
        (lambda p: p["random"]["python"].update(state=[1, 2]), r"field random.python.state: expected Python's"),
        (
            lambda p: p["random"]["numpy"].update(keys=torch.zeros(3)),
            r"field random.numpy.keys: expected shape \(624,\)",
        ),
        (lambda p: p["extra"].update(initial_lambdas=[1.0, float("nan"), 1.0, 1.0]), r"field extra.initial_lambdas: 1"),
        (lambda p: p["extra"].update(initial_lambdas=[1.0]), r"field extra.initial_lambdas: expected 4 numbers"),
        (lambda p: p.update(extra=None), r"field extra: expected a dict, got NoneType"),
        (lambda p: p["extra"].update(chance=["high"] * 4), r"field extra.chance: expected 4 numbers"),
        (lambda p: p["extra"]["identity"].pop("images"), r"field extra.identity.images: missing"),
    ],
)
def test_damaged_fields_are_named(checkpoint, change, message):
    _rewrite(checkpoint, change)
    with pytest.raises(SavedFileError, match=rf"^{checkpoint}: {message}") as info:
        load_checkpoint(checkpoint)
    assert "\n" not in str(info.value)


def test_a_flipped_byte_in_the_weights_is_detected(checkpoint, state):
    data = bytearray(checkpoint.read_bytes())
    at = data.find(state["model"]["net.0.weight"].numpy().tobytes()[:32])
    assert at > 0
    data[at + 3] ^= 0x40
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(SavedFileError, match=rf"^{checkpoint}: checksum mismatch"):
        load_checkpoint(checkpoint)


def test_any_flipped_byte_is_an_error_naming_the_file_or_changes_nothing(checkpoint):
    reference = load_checkpoint(checkpoint)["trainer"]

    def intact(got):
        got = got["trainer"]
        return torch.equal(got["lambda_raw"], reference["lambda_raw"]) and all(
            torch.equal(v, reference["model"][k]) for k, v in got["model"].items()
        )

    assert flip_each_byte_check(checkpoint, load_checkpoint, intact, n=150, seed=2) > 100


def test_checkpoints_without_a_checksum_still_load_with_the_other_checks(checkpoint):
    _rewrite(checkpoint, lambda p: p.pop("checksum"), checksum=False)
    assert load_checkpoint(checkpoint)["trainer"]["steps"] == 2
    _rewrite(checkpoint, _nan(("trainer", "lambda_raw")), checksum=False)
    with pytest.raises(SavedFileError, match="field trainer.lambda_raw: 1 of 4 values are NaN"):
        load_checkpoint(checkpoint)
