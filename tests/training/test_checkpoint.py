"""Run checkpoints: atomic writes (a failed save keeps the previous file and leaves no temporary file),
weights-only loading with clear errors, random states that round-trip."""

import random

import numpy as np
import pytest
import torch

from bfdkern.training.checkpoint import load_checkpoint, random_states, save_checkpoint, set_random_states


def trainer_state(steps: int = 1) -> dict:
    """A real BilevelTrainer's state after ``steps`` steps of a tiny MLP (optimiser state filled in)."""
    from bfdkern.bilevel import BilevelTrainer
    from tests.bilevel.toy import SPEC, make_batch, make_model

    model = make_model("mlp")
    trainer = BilevelTrainer(model, SPEC, torch.optim.AdamW(model.parameters(), lr=1e-3))
    for step in range(steps):
        trainer.step(make_batch("mlp", 2 * step), make_batch("mlp", 2 * step + 1))
    return trainer.state_dict()


def test_round_trip(tmp_path):
    state = trainer_state()
    path = save_checkpoint(tmp_path / "c.pt", state, {"tr": (1, 2), "val": (0, 5)}, {"note": "x"})
    got = load_checkpoint(path)
    assert got["trainer"]["steps"] == 1 and torch.equal(
        got["trainer"]["model"]["net.0.weight"], state["model"]["net.0.weight"]
    )
    assert got["streams"] == {"tr": [1, 2], "val": [0, 5]} and got["extra"] == {"note": "x"}


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"steps": 1}, {})
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save (or the checksum) raises for a function
        save_checkpoint(path, {"steps": 2, "bad": lambda: 0}, {})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_random_states_round_trip():
    random.seed(1)
    np.random.seed(2)
    np.random.normal()  # a cached Gaussian is part of NumPy's state
    states = random_states()
    want = (random.random(), np.random.random(), np.random.normal())
    random.seed(9)
    np.random.seed(9)
    set_random_states(states)
    assert (random.random(), np.random.random(), np.random.normal()) == want


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip file")
    with pytest.raises(
        ValueError, match="junk.pt: cannot be read as a weights-only torch checkpoint: Unsupported operand"
    ):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a bfdkern pretraining checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_pickled_model_is_one_line_that_says_what_to_save_instead(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")  # a whole module, not a state dict
    with pytest.raises(ValueError) as info:
        load_checkpoint(tmp_path / "model.pt")
    assert str(info.value) == (
        f"{tmp_path / 'model.pt'}: cannot be read as a weights-only torch checkpoint: it holds a pickled torch.nn.modules.linear.Linear "
        "object (a whole model?), which weights-only loading does not run; save its state_dict() instead"
    )
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="junk.pt: cannot be read as a weights-only torch checkpoint: ") as info:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
