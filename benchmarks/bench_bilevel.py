"""Benchmarks of the bi-level step: one full step per variant against the research-code baseline
and a plain weighted-sum step; the paired evaluation (batched vs sequential); the perturbation op.

Run: ``python -m pytest --benchmark benchmarks/bench_bilevel.py -s`` (``-s`` shows the summary
tables; ``BFDKERN_BENCH_THREADS=1`` pins torch to one thread, for a CPU shared with other jobs). CPU: torchvision ResNet-18 at 64x64, B = 16; CUDA (when present): ResNet-50 at 224x224,
B = 48; both with the BLADES spec and a packed linear head (``num_classes = spec.num_columns``).

``test_step_summary`` times the step variants round-robin (so load from other processes hits all
of them alike) and prints medians, ratios, peak memory and the issue's targets (MET / MISSED;
``BFDKERN_BENCH_STRICT=1`` makes a miss fail the run). ``BFDKERN_BENCH_ROUNDS`` sets the rounds;
``BFDKERN_BENCH_VARIANTS=fd,jvp,...`` runs only those variants (plus the plain step and the baseline).
Peak memory of a step, in a fresh subprocess per variant after two warm-up steps: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the resident-set high-water mark (``VmHWM``, reset
through ``/proc/self/clear_refs``), with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors leave
the resident set. The table gives it above the plain step's resting state (same model and
optimizer state), so workspaces a variant keeps between steps are counted.

Cost model (f = one forward, a backward ~ 2f): plain 3f; baseline ~11f plus a model copy;
paper order with the forward reused ~10f; lagged ~8f.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

from benchmarks.baselines import research_bilevel_step
from bfdkern.bilevel import BilevelTrainer
from bfdkern.bilevel.paired_eval import paired_losses
from bfdkern.bilevel.params import ParamLayout
from bfdkern.ops import multitask_loss, perturb_pair
from bfdkern.tasks import blades_spec
from tests.helpers import random_targets

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("BFDKERN_BENCH_THREADS"):
    # On a CPU shared with other jobs, two OpenMP threads stall at every barrier when the other
    # core is taken; one thread gives stable figures there.
    torch.set_num_threads(int(os.environ["BFDKERN_BENCH_THREADS"]))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SETTINGS = {
    "cpu": {"arch": "resnet18", "size": 64, "batch": 16, "rounds": 5},
    "cuda": {"arch": "resnet50", "size": 224, "batch": 48, "rounds": 20},
}
LR, WEIGHT_DECAY = 1e-5, 1e-3  # the paper's AdamW settings
STEP_VARIANTS = {
    "plain": None,
    "baseline": None,
    "fd": {"mode": "fd"},
    "fd_fresh_forward": {"mode": "fd", "reuse_forward": False},
    "fd_lagged": {"mode": "fd", "update_order": "lagged"},
    # The trainer before its theta+- workspace: a fresh [2, N] perturbation output every step.
    "fd_fresh_output": {"mode": "fd", "fresh_pair_output": True},
    "fd_lagged_fresh_output": {"mode": "fd", "update_order": "lagged", "fresh_pair_output": True},
    "fd_batched_pair": {"mode": "fd", "batched_pair": True},
    "fd_sequential_pair": {"mode": "fd", "batched_pair": False},
    "jvp": {"mode": "jvp"},
    "unroll": {"mode": "unroll"},
}


def selected_variants() -> list[str]:
    """The step variants to run: all, or those named in ``BFDKERN_BENCH_VARIANTS`` (comma-separated; the GPU
    check runs the ones the targets need, to fit its time), always with the plain step and the baseline that
    the ratios are taken against."""
    names = [v for v in os.environ.get("BFDKERN_BENCH_VARIANTS", "").split(",") if v]
    unknown = sorted(set(names) - set(STEP_VARIANTS))
    if unknown:
        raise ValueError(f"BFDKERN_BENCH_VARIANTS: unknown variants {unknown}; known: {list(STEP_VARIANTS)}")
    return [v for v in STEP_VARIANTS if not names or v in names or v in ("plain", "baseline")]


def _rounds(device: str) -> int:
    return int(os.environ.get("BFDKERN_BENCH_ROUNDS", SETTINGS[device]["rounds"]))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def random_batch(spec, device: str, seed: int):
    """(images [B, 3, S, S] in [0, 1], targets [B, J]) with the outer task always labelled."""
    s = SETTINGS[device]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(s["batch"], 3, s["size"], s["size"], generator=g)
    y = random_targets(spec, s["batch"], generator=g, dtype=torch.float32)
    for k in spec.outer_indices:
        y[:, spec.target_columns(k)] = torch.randint(0, 2, (s["batch"], 1), generator=g).float()
    return x.to(device), y.to(device)


def build_model(spec, device: str, seed: int = 0) -> torch.nn.Module:
    """torchvision ResNet with a packed linear head for the spec, in train mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, SETTINGS[device]["arch"])(num_classes=spec.num_columns)
    return model.to(device).train()


def make_step(variant: str, device: str):
    """A closure running one training step of ``variant`` (model, optimizer and batches built here)."""
    spec = blades_spec()
    model = build_model(spec, device)
    batch_tr, batch_val = random_batch(spec, device, 1), random_batch(spec, device, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    if variant == "plain":
        lam = torch.ones(spec.num_tasks, device=device)

        def step():
            opt.zero_grad(set_to_none=True)
            _, total = multitask_loss(model(batch_tr[0]), batch_tr[1], spec, lam)
            total.backward()
            opt.step()

    elif variant == "baseline":
        lam = torch.ones(spec.num_tasks, device=device, requires_grad=True)
        lam_opt = torch.optim.Adam([lam], lr=3e-4)

        def step():
            research_bilevel_step(model, spec, lam, lam_opt, opt, batch_tr, batch_val)

    else:
        options = dict(STEP_VARIANTS[variant])
        fresh_output = options.pop("fresh_pair_output", False)
        trainer = BilevelTrainer(model, spec, opt, **options)
        if fresh_output:
            trainer._pair_buffer = lambda: None

        def step():
            trainer.step(batch_tr, batch_val)

    def timed_step():
        step()
        _sync(device)

    return timed_step


# ---------------------------------------------------------------------------------------------
# pytest-benchmark: one full step per variant
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", list(STEP_VARIANTS))
def test_step(benchmark, device, variant):
    benchmark.group = f"bilevel step ({device}, {SETTINGS[device]['arch']})"
    step = make_step(variant, device)
    benchmark.pedantic(step, rounds=_rounds(device), warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "sequential"])
def test_paired_eval(benchmark, device, batched):
    benchmark.group = f"paired evaluation L(theta+), L(theta-) ({device})"
    spec = blades_spec()
    model = build_model(spec, device)
    x, y = random_batch(spec, device, 1)
    layout = ParamLayout.from_model(model)
    theta = layout.flatten()
    pair, _, _ = perturb_pair(theta, torch.randn_like(theta))

    def run():
        paired_losses(model, spec, layout, pair, (x, y), batched=batched)
        _sync(device)

    benchmark.pedantic(run, rounds=_rounds(device), warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["perturb_pair", "copy", "clone"])
def test_perturbation(benchmark, device, op):
    """perturb_pair over all ResNet parameters vs a copy of the same [2, N] bytes into a kept
    buffer (``copy``) and into a fresh one (``clone``: what an out-of-place op pays, page faults
    included on the CPU). GB/s = bytes read + written = 16 N for all three."""
    benchmark.group = f"perturbation ({device})"
    spec = blades_spec()
    layout = ParamLayout.from_model(build_model(spec, device))
    theta = layout.flatten()
    v = torch.randn_like(theta)
    src, dst = torch.randn(2, theta.numel(), device=device), torch.empty(2, theta.numel(), device=device)

    def run():
        if op == "perturb_pair":
            perturb_pair(theta, v)
        elif op == "copy":
            dst.copy_(src)
        else:
            src.clone()
        _sync(device)

    benchmark.pedantic(run, rounds=10 * _rounds(device), warmup_rounds=2, iterations=1)
    nbytes = 16 * theta.numel()
    benchmark.extra_info["N"] = theta.numel()
    benchmark.extra_info["GB/s (median)"] = nbytes / benchmark.stats.stats.median / 1e9


# ---------------------------------------------------------------------------------------------
# Interleaved summary: medians, ratios, peak memory, targets
# ---------------------------------------------------------------------------------------------
def peak_memory(variant: str, device: str) -> dict:
    """Peak memory of one step of ``variant`` (MiB): on CUDA in this process (the allocator's own counters,
    relative to what was allocated before the variant was built); on the CPU in a fresh subprocess (see the
    module doc)."""
    if device == "cuda":
        return _measure_peak_cuda(variant)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_bilevel", "peak", variant, device],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"peak-memory run of {variant} on {device} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_peak_cuda(variant: str) -> dict:
    gc.collect()
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    step = make_step(variant, "cuda")
    step()
    step()  # optimizer state and lazy initialisation exist from here on
    gc.collect()
    rest = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    peak = torch.cuda.max_memory_allocated()
    del step
    gc.collect()
    torch.cuda.empty_cache()
    return {"variant": variant, "base_mib": (rest - start) / 2**20, "step_peak_mib": (peak - rest) / 2**20}


def _measure_peak(variant: str, device: str) -> dict:
    if device == "cuda":
        return _measure_peak_cuda(variant)
    step = make_step(variant, device)
    step()
    step()  # optimizer state and lazy initialisation exist from here on
    gc.collect()
    status = Path("/proc/self/status")

    def field(name):
        line = next(ln for ln in status.read_text().splitlines() if ln.startswith(name + ":"))
        return int(line.split()[1]) / 1024  # kB -> MiB

    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    before = field("VmRSS")
    step()
    peak = field("VmHWM")
    return {"variant": variant, "base_mib": before, "step_peak_mib": peak - before}


TARGETS = [
    # (what, numerator, denominator, ">=" or "<=", bound) on median time ratios
    ("speedup of fd (paper order, reused forward) over the baseline", "baseline", "fd", ">=", 1.15),
    ("speedup of fd lagged over the baseline", "baseline", "fd_lagged", ">=", 1.35),
    ("fd step / plain step", "fd", "plain", "<=", 3.4),
    ("speedup of the theta+- workspace (paper order)", "fd_fresh_output", "fd", ">=", 1.0),
    ("speedup of the theta+- workspace (lagged)", "fd_lagged_fresh_output", "fd_lagged", ">=", 1.0),
    ("unroll / jvp (jvp faster)", "unroll", "jvp", ">=", 1.0),
]


MEMORY_TARGETS = [
    # (what, numerator, denominator, bound) on peak memory above the plain step's resting state
    ("fd peak memory / baseline", "fd", "baseline", 1.0),
    ("jvp peak memory / unroll", "jvp", "unroll", 0.6),
]


@pytest.mark.parametrize("device", DEVICES)
def test_step_summary(device, capsys):
    """All step variants round-robin; medians, ratios to the baseline and plain step, peak memory."""
    variants = selected_variants()
    steps = {v: make_step(v, device) for v in variants}
    times = {v: [] for v in steps}
    cpu_times = {v: [] for v in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(_rounds(device)):
        for v, step in steps.items():
            t, c = time.perf_counter(), time.process_time()
            step()
            times[v].append(time.perf_counter() - t)
            cpu_times[v].append(time.process_time() - c)
    del steps
    gc.collect()
    med = {v: statistics.median(ts) for v, ts in times.items()}
    cpu_med = {v: statistics.median(ts) for v, ts in cpu_times.items()}
    peaks = {v: peak_memory(v, device) for v in variants}
    s = SETTINGS[device]
    lines = [
        f"bi-level step on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}): "
        f"{s['arch']} {s['size']}x{s['size']} B={s['batch']}, {_rounds(device)} interleaved rounds, "
        f"{torch.get_num_threads()} CPU threads",
        f"{'variant':<24}{'median s':>10}{'x plain':>9}{'baseline/x':>12}{'cpu s':>8}{'peak MiB':>10}"
        f"{'x baseline':>12}{'abs peak MiB':>14}",
    ]
    # Peak = high-water mark during the step above the plain step's resting state (same model and
    # optimizer state), so persistent workspaces a variant keeps between steps count too.
    rest = peaks["plain"]["base_mib"]
    above = {v: p["base_mib"] + p["step_peak_mib"] - rest for v, p in peaks.items()}
    for v in variants:
        lines.append(
            f"{v:<24}{med[v]:>10.3f}{med[v] / med['plain']:>9.2f}{med['baseline'] / med[v]:>12.2f}{cpu_med[v]:>8.3f}"
            f"{above[v]:>10.0f}{above[v] / above['baseline']:>12.2f}{rest + above[v]:>14.0f}"
        )
    verdicts = []  # a target whose variants were not run is left out
    for text, num, den, op, bound in TARGETS:
        if num in med and den in med:
            ratio = med[num] / med[den]
            verdicts.append((ratio >= bound if op == ">=" else ratio <= bound, f"{text}: {ratio:.2f} ({op} {bound})"))
    for text, num, den, bound in MEMORY_TARGETS:
        if num in above and den in above:
            ratio = above[num] / above[den]
            verdicts.append((ratio <= bound, f"{text}: {ratio:.2f}x (<= {bound})"))
    lines += [f"{'MET   ' if ok else 'MISSED'} {text}" for ok, text in verdicts]
    report = "\n".join(lines)
    out = ROOT / ".benchmarks" / f"bilevel_summary_{device}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "settings": s,
                "threads": torch.get_num_threads(),
                "median_s": med,
                "times_s": times,
                "cpu_median_s": cpu_med,
                "peak": peaks,
                "report": report,
            },
            indent=1,
        )
    )
    with capsys.disabled():
        print("\n" + report)
    if os.environ.get("BFDKERN_BENCH_STRICT") == "1":  # fail on a missed target (a quiet machine only)
        assert all(ok for ok, _ in verdicts), report


def probe(device: str) -> dict:
    """One tiny trainer step and a perturbation with the default backends (does this device work?)."""
    import bfdkern.ops as ops

    spec = blades_spec()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, spec.num_columns)).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 12, generator=g).to(device)
    y = random_targets(spec, 8, generator=g, dtype=torch.float32, missing=0.0).to(device)
    record = BilevelTrainer(model, spec).step((x, y), (x, y))
    theta = torch.randn(1000, device=device)
    perturb_pair(theta, theta)
    return {"backends": ops.available(torch.device(device)), "lambdas": record.lambdas.tolist()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="peak memory of one step variant, or a device probe (JSON)")
    parser.add_argument("what", choices=["peak", "probe"])
    parser.add_argument("variant", nargs="?", choices=list(STEP_VARIANTS))
    parser.add_argument("device", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.what == "probe":
        print(json.dumps(probe(args.device)))
        return 0
    if args.variant is None:
        parser.error("peak needs a variant")
    print(json.dumps(_measure_peak(args.variant, args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
