"""Benchmarks of the bi-level step: one full step per variant against the research-code baseline
and a plain weighted-sum step; the paired evaluation (batched vs sequential); the perturbation op.

Run: ``python -m pytest --benchmark benchmarks/bench_bilevel.py -s`` (``-s`` shows the summary
tables; ``BFDKERN_BENCH_THREADS=1`` pins torch to one thread, for a CPU shared with other jobs). CPU: torchvision ResNet-18 at 64x64, B = 16; CUDA (when present): ResNet-50 at 224x224,
B = 48; both with the BLADES spec and a packed linear head (``num_classes = spec.num_columns``).

``test_step_summary`` times the step variants round-robin (so load from other processes hits all
of them alike) and prints medians, ratios, peak memory and the issue's targets (MET / MISSED;
``BFDKERN_BENCH_STRICT=1`` makes a miss fail the run). ``BFDKERN_BENCH_ROUNDS`` sets the rounds;
``BFDKERN_BENCH_VARIANTS=fd,jvp,...`` runs only those variants (plus the plain step and the baseline).
The same summary from the command line, for any case (``cpu``, ``cuda`` = ResNet-50 224 px B = 48,
``cuda-r18`` = ResNet-18 112 px B = 48, ``tiny`` = a one-block-a-stage ResNet at 32 px, B = 4, one thread,
peak memory measured in-process, for dry runs), in float32 or
under bf16 autocast, with a JSON file::

    python -m benchmarks.bench_bilevel summary CASE [--amp bf16] [--variants ...] [--rounds 10] [--json OUT]

The ``*_captured`` variants build the optimizer with ``capturable=True`` and the trainer with
``cuda_graph="auto"`` (a captured CUDA graph per step after three warm-up steps; eager on the CPU).
Peak memory of a step, in a fresh subprocess per variant after two warm-up steps: on CUDA
``torch.cuda.max_memory_allocated`` (in this process); on the CPU the resident-set high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs``), with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed
tensors leave the resident set. The table gives it above the plain step's resting state (same model
and optimizer state), so workspaces a variant keeps between steps are counted.

Cost model (f = one forward, a backward ~ 2f): plain 3f; baseline ~11f plus a model copy;
paper order with the forward reused ~10f; lagged ~8f.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
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
    "cpu": {"device": "cpu", "arch": "resnet18", "size": 64, "batch": 16, "rounds": 5},
    "cuda": {"device": "cuda", "arch": "resnet50", "size": 224, "batch": 48, "rounds": 20},
    "cuda-r18": {"device": "cuda", "arch": "resnet18", "size": 112, "batch": 48, "rounds": 20},
    "tiny": {"device": "cpu", "arch": "resnet10", "size": 32, "batch": 4, "rounds": 2, "peak_in_process": True},
}
"""Benchmark cases: the pytest benchmarks use ``cpu`` and ``cuda``; the GPU check adds ``cuda-r18`` (where
host overhead shows) and its dry run ``tiny``."""
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
    # One CUDA graph a step (capturable AdamW), eager where capture cannot work (the CPU).
    "fd_captured": {"mode": "fd", "cuda_graph": "auto"},
    "fd_lagged_captured": {"mode": "fd", "update_order": "lagged", "cuda_graph": "auto"},
    "jvp_captured": {"mode": "jvp", "cuda_graph": "auto"},
}
DEFAULT_VARIANTS = [v for v in STEP_VARIANTS if not v.endswith("_captured")]
"""What ``test_step_summary`` runs when ``BFDKERN_BENCH_VARIANTS`` is unset."""


def selected_variants(names: str | None = None) -> list[str]:
    """The step variants to run: ``names`` (comma-separated; default ``BFDKERN_BENCH_VARIANTS``, else every
    eager variant), always with the plain step and the baseline that the ratios are taken against."""
    text = os.environ.get("BFDKERN_BENCH_VARIANTS", "") if names is None else names
    chosen = [v for v in text.split(",") if v]
    unknown = sorted(set(chosen) - set(STEP_VARIANTS))
    if unknown:
        raise ValueError(f"unknown step variants {unknown}; known: {list(STEP_VARIANTS)}")
    wanted = chosen or DEFAULT_VARIANTS
    return [v for v in STEP_VARIANTS if v in wanted or v in ("plain", "baseline")]


def _rounds(case: str) -> int:
    return int(os.environ.get("BFDKERN_BENCH_ROUNDS", SETTINGS[case]["rounds"]))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def random_batch(spec, case: str, seed: int):
    """(images [B, 3, S, S] in [0, 1], targets [B, J]) with the outer task always labelled."""
    s = SETTINGS[case]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(s["batch"], 3, s["size"], s["size"], generator=g)
    y = random_targets(spec, s["batch"], generator=g, dtype=torch.float32)
    for k in spec.outer_indices:
        y[:, spec.target_columns(k)] = torch.randint(0, 2, (s["batch"], 1), generator=g).float()
    return x.to(s["device"]), y.to(s["device"])


def build_model(spec, case: str, seed: int = 0) -> torch.nn.Module:
    """torchvision ResNet with a packed linear head for the spec, in train mode."""
    torch.manual_seed(seed)
    arch = SETTINGS[case]["arch"]
    if arch == "resnet10":  # one basic block a stage: the dry run's small ResNet
        model = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], spec.num_columns)
    else:
        model = getattr(torchvision.models, arch)(num_classes=spec.num_columns)
    return model.to(SETTINGS[case]["device"]).train()


def _autocast(device: str, amp: str | None):
    return torch.autocast(device, dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()


def make_step(variant: str, case: str, amp: str | None = None):
    """A closure running one training step of ``variant`` (model, optimizer and batches built here); ``amp``
    ``bf16`` runs the forwards under bf16 autocast."""
    spec = blades_spec()
    device = SETTINGS[case]["device"]
    model = build_model(spec, case)
    batch_tr, batch_val = random_batch(spec, case, 1), random_batch(spec, case, 2)
    options = dict(STEP_VARIANTS[variant] or {})
    capturable = device == "cuda" and "cuda_graph" in options
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, capturable=capturable)
    if variant == "plain":
        lam = torch.ones(spec.num_tasks, device=device)

        def step():
            opt.zero_grad(set_to_none=True)
            with _autocast(device, amp):
                logits = model(batch_tr[0])
            _, total = multitask_loss(logits, batch_tr[1], spec, lam)
            total.backward()
            opt.step()

    elif variant == "baseline":
        lam = torch.ones(spec.num_tasks, device=device, requires_grad=True)
        lam_opt = torch.optim.Adam([lam], lr=3e-4)

        def step():
            with _autocast(device, amp):
                research_bilevel_step(model, spec, lam, lam_opt, opt, batch_tr, batch_val)

    else:
        fresh_output = options.pop("fresh_pair_output", False)
        amp_dtype = torch.bfloat16 if amp == "bf16" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cuda_graph='auto' on the CPU: eager steps, as intended
            trainer = BilevelTrainer(model, spec, opt, amp_dtype=amp_dtype, **options)
        if fresh_output:
            trainer.workspace.pair_buffer = lambda: None

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
def peak_memory(variant: str, case: str, amp: str | None = None) -> dict:
    """Peak memory of one step of ``variant`` (MiB): on CUDA in this process (the allocator's own counters,
    relative to what was allocated before the variant was built); on the CPU in a fresh subprocess (see the
    module doc)."""
    if SETTINGS[case]["device"] == "cuda" or SETTINGS[case].get("peak_in_process"):
        return _measure_peak(variant, case, amp)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "benchmarks.bench_bilevel", "peak", case, variant]
    if amp:
        command += ["--amp", amp]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"peak-memory run of {variant} ({case}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_peak(variant: str, case: str, amp: str | None = None) -> dict:
    if SETTINGS[case]["device"] == "cuda":
        gc.collect()
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        step = make_step(variant, case, amp)
        for _ in range(5 if variant.endswith("_captured") else 2):
            step()  # optimizer state, lazy initialisation (and a captured graph) exist from here on
        gc.collect()
        rest = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        peak = torch.cuda.max_memory_allocated()
        del step
        gc.collect()
        torch.cuda.empty_cache()
        return {"variant": variant, "base_mib": (rest - start) / 2**20, "step_peak_mib": (peak - rest) / 2**20}
    step = make_step(variant, case, amp)
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
    ("jvp step / fd step", "jvp", "fd", "<=", 1.15),
    ("speedup of the captured fd step over the eager one", "fd", "fd_captured", ">=", 1.2),
]


MEMORY_TARGETS = [
    # (what, numerator, denominator, bound) on peak memory above the plain step's resting state
    ("fd peak memory / baseline", "fd", "baseline", 1.0),
    ("jvp peak memory / unroll", "jvp", "unroll", 0.6),
]


def step_summary(case: str, variants: list[str], rounds: int, amp: str | None = None) -> dict:
    """All ``variants`` round-robin on ``case`` (each warmed up first; captured ones past their capture);
    medians, ratios to the baseline and plain step, peak memory, the targets. Returns the report dict
    (``report`` holds the printed table)."""
    device = SETTINGS[case]["device"]
    steps = {v: make_step(v, case, amp) for v in variants}
    times = {v: [] for v in steps}
    cpu_times = {v: [] for v in steps}
    for v, step in steps.items():
        for _ in range(5 if v.endswith("_captured") else 1):
            step()  # warm-up (a captured variant: three eager steps, the capture, a replay)
    for _ in range(rounds):
        for v, step in steps.items():
            t, c = time.perf_counter(), time.process_time()
            step()
            times[v].append(time.perf_counter() - t)
            cpu_times[v].append(time.process_time() - c)
    del steps
    gc.collect()
    med = {v: statistics.median(ts) for v, ts in times.items()}
    cpu_med = {v: statistics.median(ts) for v, ts in cpu_times.items()}
    peaks = {v: peak_memory(v, case, amp) for v in variants}
    s = SETTINGS[case]
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    lines = [
        f"bi-level step, case {case} on {device} ({card}), torch {torch.__version__}"
        + (f" CUDA {torch.version.cuda}" if device == "cuda" else "")
        + f": {s['arch']} {s['size']}x{s['size']} B={s['batch']}, {'bf16 autocast' if amp == 'bf16' else 'float32'}, "
        f"{rounds} interleaved rounds, {torch.get_num_threads()} CPU threads",
        f"{'variant':<24}{'median s':>10}{'x plain':>9}{'baseline/x':>12}{'cpu s':>8}{'peak MiB':>10}"
        f"{'x baseline':>12}{'abs peak MiB':>14}",
    ]
    # Peak = high-water mark during the step above the plain step's resting state (same model and
    # optimizer state), so persistent workspaces a variant keeps between steps count too.
    rest = peaks["plain"]["base_mib"]
    above = {v: p["base_mib"] + p["step_peak_mib"] - rest for v, p in peaks.items()}
    for v in variants:
        lines.append(
            f"{v:<24}{med[v]:>10.4f}{med[v] / med['plain']:>9.2f}{med['baseline'] / med[v]:>12.2f}{cpu_med[v]:>8.3f}"
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
    if device == "cpu" and s.get("peak_in_process"):
        lines.append(
            "(peak memory read in one process on the CPU: the variants share it, the figures only prove the code)"
        )
    return {
        "case": case,
        "settings": s,
        "amp": amp,
        "card": card,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device == "cuda" else None,
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "median_s": med,
        "times_s": times,
        "cpu_median_s": cpu_med,
        "peak": peaks,
        "peak_above_plain_rest_mib": above,
        "targets": [{"met": ok, "what": text} for ok, text in verdicts],
        "report": "\n".join(lines),
    }


@pytest.mark.parametrize("device", DEVICES)
def test_step_summary(device, capsys):
    """All step variants round-robin; medians, ratios to the baseline and plain step, peak memory."""
    summary = step_summary(device, selected_variants(), _rounds(device))
    out = ROOT / ".benchmarks" / f"bilevel_summary_{device}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    with capsys.disabled():
        print("\n" + summary["report"])
    if os.environ.get("BFDKERN_BENCH_STRICT") == "1":  # fail on a missed target (a quiet machine only)
        assert all(t["met"] for t in summary["targets"]), summary["report"]


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
    parser = argparse.ArgumentParser(description="bi-level step summary, peak memory of one variant, or a probe (JSON)")
    sub = parser.add_subparsers(dest="what", required=True)
    summary = sub.add_parser("summary", help="time the step variants side by side (medians), print and write JSON")
    summary.add_argument("case", choices=list(SETTINGS))
    summary.add_argument("--variants", default="", help="comma-separated (default: every eager variant)")
    summary.add_argument("--rounds", type=int, default=None)
    summary.add_argument("--amp", choices=["bf16"], default=None)
    summary.add_argument("--json", type=Path, default=None)
    peak = sub.add_parser("peak", help="peak memory of one step of a variant")
    peak.add_argument("case", choices=list(SETTINGS))
    peak.add_argument("variant", choices=list(STEP_VARIANTS))
    peak.add_argument("--amp", choices=["bf16"], default=None)
    probe_p = sub.add_parser("probe", help="one tiny step on a device")
    probe_p.add_argument("device", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.what == "probe":
        print(json.dumps(probe(args.device)))
    elif args.what == "peak":
        print(json.dumps(_measure_peak(args.variant, args.case, args.amp)))
    else:
        if args.case == "tiny":  # a dry run on a shared CPU: two threads would wait on each other
            torch.set_num_threads(1)
        rounds = args.rounds or _rounds(args.case)
        result = step_summary(args.case, selected_variants(args.variants), rounds, args.amp)
        print(result["report"], flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
