"""What validating a file on load costs: a ResNet-50 encoder file (98 MB) written and read by bfdkern (the
checksum of the payload, field and finiteness checks) against plain ``torch.save`` / ``torch.load`` of the same
payload, and the checksum alone; measured side by side. Run with
``python -m pytest --benchmark benchmarks/bench_files.py``.
"""

from __future__ import annotations

import pytest
import torch

from bfdkern.models import BladesModel, read_checkpoint, save_model
from bfdkern.models.files import payload_checksum
from bfdkern.tasks import blades_spec


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    model = BladesModel(blades_spec(), backbone="resnet50")
    path = save_model(tmp_path_factory.mktemp("files") / "encoder.pt", model)
    return path, torch.load(path, weights_only=True)


def _median(benchmark) -> float | None:
    return benchmark.stats.stats.median if benchmark.stats is not None else None


@pytest.mark.benchmark(group="resnet50-encoder-read")
def test_bfdkern_read_checkpoint(benchmark, encoder):
    path, _ = encoder
    benchmark.pedantic(read_checkpoint, args=(path,), rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="resnet50-encoder-read")
def test_plain_torch_load(benchmark, encoder):
    path, _ = encoder
    benchmark.pedantic(torch.load, args=(path,), kwargs={"weights_only": True}, rounds=5, iterations=1)


@pytest.mark.benchmark(group="resnet50-encoder-read")
def test_payload_checksum_alone(benchmark, encoder):
    _, payload = encoder
    benchmark.pedantic(payload_checksum, args=(payload,), rounds=5, iterations=1)
    median = _median(benchmark)
    if median is not None:
        mb = sum(t.numel() * t.element_size() for t in payload["state_dict"].values()) / 1e6
        benchmark.extra_info["MB_per_s"] = round(mb / median)
