"""The backend table: select returns its entries, and a new backend is one entry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import bfdkern
from bfdkern.ops import backends, dispatch, reference
from bfdkern.ops.backends import BY_NAME, TABLE, Backend
from bfdkern.tasks import blades_spec
from tests.helpers import random_inputs

CPU = torch.device("cpu")


def test_select_returns_the_table_entry():
    chosen = dispatch.select(CPU)
    assert isinstance(chosen, Backend) and chosen is BY_NAME[chosen.name]
    assert dispatch.select(CPU, "reference") is BY_NAME["reference"]
    assert dispatch.ensure_loaded("reference", CPU) is BY_NAME["reference"]
    assert [b.name for b in TABLE] == list(bfdkern.ops.BACKENDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chosen.name = "other"


def test_defaults_follow_the_table():
    """Unasked, select picks the lowest priority among the entries meant for the device type that can
    serve; the reference serves every device type."""
    for device in (CPU, torch.device("meta")):
        candidates = sorted((b for b in TABLE if backends.picked_by_default(b, device)), key=lambda b: b.priority)
        expected = next(b for b in candidates if b.why_not(device) is None)
        assert dispatch.select(device) is expected
    assert dispatch.select(torch.device("meta")).name == "reference"


def test_ensure_loaded_lists_every_reason():
    with pytest.raises(dispatch.BackendUnavailable) as info:
        dispatch.ensure_loaded("cuda", CPU)
    for b in TABLE:
        assert f"  {b.name}: {b.why_not(CPU) or 'available'}" in str(info.value)


def test_a_new_backend_is_one_entry(monkeypatch):
    """An entry added to the table serves both ops through the public functions, with nothing else
    changed: the op bodies call through the entry select returns."""
    calls = []

    def forward(logits, targets, weights, layout):
        calls.append("forward")
        return BY_NAME["reference"].loss_forward(logits, targets, weights, layout)

    def backward(grad_per_task, logits, targets, layout):
        calls.append("backward")
        return BY_NAME["reference"].loss_backward(grad_per_task, logits, targets, layout)

    def perturb(theta, v, radius, out=None):
        calls.append("perturb")
        return reference.perturb_pair(theta, v, radius, out)

    entry = Backend("recording", lambda device: None, forward, backward, perturb, default_for=(), priority=5)
    monkeypatch.setitem(BY_NAME, "recording", entry)
    monkeypatch.setattr(backends, "TABLE", (*TABLE, entry))
    monkeypatch.setattr(dispatch, "TABLE", (*TABLE, entry))
    monkeypatch.setattr(dispatch, "BACKENDS", (*dispatch.BACKENDS, "recording"))

    spec = blades_spec()
    logits, targets, weights = random_inputs(spec, 5)
    x = logits.clone().requires_grad_(True)
    per_task, total = bfdkern.multitask_loss(x, targets, spec, weights, backend="recording")
    total.backward()
    bfdkern.perturb_pair(torch.randn(10), torch.randn(10), backend="recording")
    assert calls == ["forward", "backward", "perturb"]
    torch.testing.assert_close(per_task, reference.per_task_losses(logits, targets, spec), rtol=0, atol=0)
    assert dispatch.select(CPU).name != "recording"  # default_for=(): never picked unasked
    assert "recording" in dispatch.available(CPU)
