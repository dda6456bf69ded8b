"""The compiled extensions: what the build recorded, and the fallback under a mismatched torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import bfdkern
from bfdkern.ops import dispatch, extension
from bfdkern.tasks import blades_spec
from tests.helpers import random_inputs

PACKAGE = Path(bfdkern.__file__).resolve().parent
CPU = torch.device("cpu")


@pytest.fixture
def info():
    recorded = extension.build_info()
    if not recorded:
        pytest.skip("bfdkern was installed without compiled extensions (no _build_info.json)")
    return recorded


@pytest.fixture
def fresh_loader():
    """Forget which extensions loaded (and the one-time warning) before and after the test."""
    extension._load.cache_clear()
    extension._warn_once.cache_clear()
    yield
    extension._load.cache_clear()
    extension._warn_once.cache_clear()


def test_build_info_records_this_torch(info):
    assert set(info) >= {"torch", "cuda", "cuda_arch"}
    assert info["torch"] == torch.__version__
    assert extension.cpp_unavailable() is None
    assert "cpp" in dispatch.available(CPU)


def test_cuda_extension_present_when_recorded(info):
    """setup.py builds bfdkern._cuda whenever torch has CUDA and a toolkit is found, so on such a
    machine every build compiles and links the CUDA sources."""
    modules = sorted(PACKAGE.glob("_cuda*.so")) + sorted(PACKAGE.glob("_cuda*.pyd"))
    if not info["cuda"]:
        assert torch.version.cuda is None or info["cuda_arch"] is None
        pytest.skip("this build has no CUDA extension (no CUDA torch or toolkit at build time)")
    assert modules, f"_build_info.json says cuda but there is no bfdkern/_cuda*.so in {PACKAGE}"
    assert info["cuda_arch"]
    assert extension.cuda_unavailable() is None  # it imports: compiled and linked against this torch


def test_mismatched_torch_warns_once_and_falls_back(monkeypatch, fresh_loader):
    monkeypatch.setattr(extension, "build_info", lambda: {"torch": "1.0.0+elsewhere", "cuda": True, "cuda_arch": "9.0"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = extension.cpp_unavailable()
        assert extension.cuda_unavailable() == reason
        available = dispatch.available(CPU)
        spec = blades_spec()
        logits, targets, weights = random_inputs(spec, 4, dtype=torch.float32)
        per_task, total = bfdkern.multitask_loss(logits, targets, spec, weights)
        bfdkern.perturb_pair(torch.ones(8), torch.ones(8))
    assert "built against torch 1.0.0+elsewhere" in reason and torch.__version__ in reason
    assert available == ["reference"] or available == ["reference", "triton"]
    assert dispatch.select(CPU).name == "reference"
    assert torch.isfinite(per_task).all() and torch.isfinite(total)
    mismatch = [w for w in caught if issubclass(w.category, RuntimeWarning) and "1.0.0+elsewhere" in str(w.message)]
    assert len(mismatch) == 1, [str(w.message) for w in caught]
    assert "serving from the reference and Triton backends" in str(mismatch[0].message)


def test_no_build_info_means_no_compiled_backend(monkeypatch, fresh_loader):
    monkeypatch.setattr(extension, "build_info", lambda: {})
    assert "no _build_info.json" in extension.cpp_unavailable()
    assert "cpp" not in dispatch.available(CPU)


def test_extensions_can_be_disabled(monkeypatch, fresh_loader):
    monkeypatch.setenv("BFDKERN_NO_EXTENSIONS", "1")
    assert extension.cpp_unavailable() == "disabled by BFDKERN_NO_EXTENSIONS"
    with pytest.raises(dispatch.BackendUnavailable, match="cpp: disabled by BFDKERN_NO_EXTENSIONS"):
        dispatch.select(CPU, "cpp")


def test_compiled_ops_have_fake_kernels(info):
    """Loading bfdkern._C registers the fake kernels (bfdkern/ops/fake_kernels.py) that the schemas name."""
    assert extension.cpp_unavailable() is None
    spec = blades_spec()
    a = spec.layout
    with torch._subclasses.fake_tensor.FakeTensorMode():
        logits = torch.empty(5, spec.num_columns, dtype=torch.bfloat16)
        targets = torch.empty(5, spec.num_targets)
        per_task, total = torch.ops.bfdkern_C.multitask_loss_fwd(logits, targets, torch.empty(spec.num_tasks), *a)
        grad = torch.ops.bfdkern_C.multitask_loss_bwd(torch.empty(spec.num_tasks), logits, targets, *a)
        out, eps, flag = torch.ops.bfdkern_C.perturb_pair(torch.empty(9, dtype=torch.float64), torch.empty(9), 0.01)
    assert per_task.shape == (spec.num_tasks,) and per_task.dtype == torch.float32 and total.shape == ()
    assert grad.shape == (5, spec.num_columns) and grad.dtype == torch.bfloat16
    assert out.shape == (2, 9) and out.dtype == eps.dtype == torch.float64 and flag.dtype == torch.bool
