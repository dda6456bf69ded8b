"""Does data loading keep up with training? The demo's setting on the CPU (64 x 64 simulated photos, batch 32,
the small backbone on one torch thread, fd hypergradient), measured side by side in one run:

* the bi-level step alone, on batches already in memory (steps/s);
* one batch stream (:class:`bfdkern.training.BatchStream`) with 0 and with 2 DataLoader workers, the
  consumer idle (batches/s); a step takes a batch from each of two streams, so the loader keeps up when
  batches/s / 2 >= steps/s (target, with 2 workers);
* the whole run loop with 2 workers per stream: steps/s and the fraction of its time spent waiting for data.

Run with ``python -m pytest --benchmark benchmarks/bench_pretrain.py -s``.
"""

from __future__ import annotations

import pytest
import torch

from bfdkern.data import FaceDataset, make_loaders
from bfdkern.data.simulator import simulate_collection
from bfdkern.recipes.demo import DemoSettings
from bfdkern.training import BatchStream, Pretraining, read_log

DEMO = DemoSettings()
N_PHOTOS = 256
N_BATCHES = 16
LOOP_STEPS = 48

_rates: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(DEMO.threads)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    simulate_collection(root, N_PHOTOS, seed=0, size=DEMO.image_size)
    return root


def _median(benchmark) -> float | None:
    return benchmark.stats.stats.median if benchmark.stats is not None else None


@pytest.mark.benchmark(group="pretrain-demo")
def test_step_alone(benchmark, photos, tmp_path):
    config = DEMO.pretrain_config(photos, epochs=1, workers=0, max_steps=None, progress=False)
    session = Pretraining(config, tmp_path / "run", echo=lambda m: None)
    batches = [session.streams["tr"].next() for _ in range(2)]
    session.model.train()
    benchmark.pedantic(session.trainer.step, args=tuple(batches), rounds=20, iterations=1, warmup_rounds=3)
    median = _median(benchmark)
    if median is not None:
        _rates["step"] = 1 / median
        benchmark.extra_info["steps_per_s"] = round(1 / median, 2)
        print(f"\nbi-level step alone (batch {DEMO.batch_size}, {DEMO.image_size} px): {1 / median:.2f} steps/s")


@pytest.mark.benchmark(group="pretrain-demo")
@pytest.mark.parametrize("workers", [0, 2])
def test_loader(benchmark, photos, workers):
    dataset = FaceDataset(photos, DEMO.spec(), size=DEMO.image_size, seed=0)
    loader, _ = make_loaders(dataset, DEMO.batch_size, num_workers=workers)
    stream = BatchStream(loader)
    stream.next()  # workers started

    def draw():
        for _ in range(N_BATCHES):
            stream.next()

    benchmark.pedantic(draw, rounds=5, iterations=1, warmup_rounds=1)
    stream.close()
    median = _median(benchmark)
    if median is not None:
        rate = N_BATCHES / median
        _rates[f"loader{workers}"] = rate
        benchmark.extra_info["batches_per_s"] = round(rate, 1)
        print(f"\none stream, {workers} workers: {rate:.1f} batches/s ({rate / 2:.1f} steps/s for two streams)")
        if workers == 2 and "step" in _rates:
            ratio = rate / 2 / _rates["step"]
            benchmark.extra_info["loader_steps_per_s_over_step_rate"] = round(ratio, 2)
            print(f"loader (2 workers) / demo step rate: {ratio:.2f}x (target >= 1)")
            assert ratio >= 1.0


@pytest.mark.benchmark(group="pretrain-loop")
def test_run_loop_with_two_workers(benchmark, photos, tmp_path):
    results = []

    def loop():
        run = tmp_path / f"run{len(results)}"
        config = DEMO.pretrain_config(photos, epochs=10, workers=2, max_steps=LOOP_STEPS, progress=False)
        result = Pretraining(config, run, echo=lambda m: None).run(plots=False)
        results.append((result, float(read_log(run)["data_s"].sum())))

    benchmark.pedantic(loop, rounds=2, iterations=1)
    last, waited = results[-1]
    rate = last.session_steps / last.wall_seconds
    benchmark.extra_info.update(
        steps_per_s=round(rate, 2),
        median_wait_ms=round(1000 * last.data_seconds, 1),
        median_step_ms=round(1000 * last.step_seconds, 1),
    )
    print(
        f"\nrun loop, 2 workers a stream: {rate:.2f} steps/s over {last.session_steps} steps (workers start "
        f"included); median step {1000 * last.step_seconds:.0f} ms, median wait for data "
        f"{1000 * last.data_seconds:.0f} ms ({100 * waited / last.wall_seconds:.0f}% of the loop)"
    )
