"""GPU verification and timing report for the CUDA and Triton kernels (run by gpu_check.sh).

    python benchmarks/gpu_report.py OUT_DIR [--dry-run]
    python benchmarks/gpu_report.py OUT_DIR --merge [--dry-run]     (gpu_check.sh's last step)

Checks every CUDA and Triton op against the float64 reference on fresh random inputs, with the
caching allocator poisoned (NaN) before each run so unwritten outputs show, and a repeat run
that must be bitwise identical (no races). Times the ops with CUDA events (median of 30 after 5
warm-up calls): the loss through the public function, eager and captured in a CUDA graph, and the
perturbation against the card's device-to-device copy bandwidth, measured in the same run. (The
bi-level step is timed by benchmarks/bench_bilevel.py, which gpu_check.sh runs next.) Writes
OUT_DIR/gpu_report.json and prints a short table last.

``--dry-run`` runs the same code paths on the CPU at toy sizes (reference and C++ backends), to
check the script, the JSON format and the table without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bfdkern.ops import available, multitask_loss, perturb_pair, reference  # noqa: E402
from bfdkern.tasks import blades_spec  # noqa: E402
from tests.helpers import random_inputs  # noqa: E402


def timed(fn, device: torch.device, warmup: int = 5, repeats: int = 30) -> float:
    """Median seconds of fn(): CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def poison(device: torch.device, nbytes: int = 1 << 28) -> None:
    """Fill cached free memory with NaN so that an output a kernel fails to write shows up."""
    if device.type == "cuda":
        junk = torch.full((nbytes // 4,), float("nan"), device=device)
        del junk


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double().cpu(), ref.double().cpu()
    if not torch.isfinite(x).all():
        return float("inf")
    return float((x - ref).norm() / ref.norm().clamp_min(1e-300))


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Device-to-device copy, bytes read + written per second."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), device)
    return 2 * src.numel() * 4 / t


def check_loss(device, backends, sizes, results) -> None:
    spec = blades_spec()
    for backend in backends:
        for b in sizes:
            for dtype in (torch.float32, torch.float64):
                logits, targets, weights = random_inputs(spec, b, dtype=dtype)
                gvec = torch.rand(spec.num_tasks, dtype=torch.float64) + 0.5
                ref_x = logits.double().requires_grad_(True)
                ref_pt = reference.per_task_losses(ref_x, targets.double(), spec)
                (ref_g,) = torch.autograd.grad(ref_pt, ref_x, gvec)
                outs = []
                for _ in range(2):
                    poison(device)
                    x = logits.to(device).requires_grad_(True)
                    pt, _ = multitask_loss(x, targets.to(device), spec, weights.to(device), backend=backend)
                    (g,) = torch.autograd.grad(pt, x, gvec.to(device, pt.dtype))
                    outs.append((pt.detach().clone(), g.clone()))
                identical = bool(torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]))
                results.append(
                    {
                        "check": "multitask_loss",
                        "backend": backend,
                        "B": b,
                        "dtype": str(dtype).split(".")[-1],
                        "rel_err_loss": rel_err(outs[0][0], ref_pt.detach()),
                        "rel_err_grad": rel_err(outs[0][1], ref_g),
                        "repeat_identical": identical,
                    }
                )


def check_perturb(device, backends, n, results) -> None:
    for backend in backends:
        for dtype in (torch.float32, torch.bfloat16):
            theta, v = torch.randn(n, dtype=dtype), torch.randn(n)
            ref_out, ref_eps, _ = reference.perturb_pair(theta.double(), v.double())
            outs = []
            for _ in range(2):
                poison(device)
                out, eps, flag = perturb_pair(theta.to(device), v.to(device), backend=backend)
                outs.append(out.clone())
            zero_out, zero_eps, _ = perturb_pair(theta.to(device), torch.zeros(n, device=device), backend=backend)
            nan_v = v.clone()
            nan_v[n // 2] = float("nan")
            _, nan_eps, nan_flag = perturb_pair(theta.to(device), nan_v.to(device), backend=backend)
            guards = bool(
                float(zero_eps) == 0.0
                and torch.equal(zero_out[0].cpu(), theta)
                and float(nan_eps) == 0.0
                and bool(nan_flag)
            )
            results.append(
                {
                    "check": "perturb_pair",
                    "backend": backend,
                    "N": n,
                    "dtype": str(dtype).split(".")[-1],
                    "rel_err_loss": rel_err(outs[0], ref_out.to(dtype)),
                    "rel_err_grad": abs(float(eps) - float(ref_eps)) / float(ref_eps),
                    "repeat_identical": bool(torch.equal(outs[0], outs[1])),
                    "guards_ok": guards,
                }
            )


def time_loss(device, backends, sizes, results) -> None:
    spec = blades_spec()
    for b in sizes:
        logits, targets, weights = random_inputs(spec, b, dtype=torch.float32, device=device)
        base = None
        for backend in ["reference", *[x for x in backends if x != "reference"]]:
            x = logits.clone().requires_grad_(True)

            def step(x=x, backend=backend, targets=targets, weights=weights):
                _, total = multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)
                total.backward()

            t = timed(step, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                step()
                peak = torch.cuda.max_memory_allocated(device)
            else:
                peak = None
            base = t if backend == "reference" else base
            results.append(
                {
                    "op": "multitask_loss fwd+bwd",
                    "backend": backend,
                    "shape": f"B={b}",
                    "median_s": t,
                    "speedup": base / t,
                    "peak_bytes": peak,
                }
            )


def time_loss_captured(device, backends, sizes, results) -> None:
    """The loss forward + backward (``torch.autograd.grad``) through the public function, captured as one
    CUDA graph after three warm-up calls on a side stream, one replay a call; speedup against the eager
    reference call of the same size (from :func:`time_loss`, measured just before)."""
    spec = blades_spec()
    eager_reference = {
        r["shape"]: r["median_s"]
        for r in results
        if r["op"] == "multitask_loss fwd+bwd" and r["backend"] == "reference"
    }
    for b in sizes:
        logits, targets, weights = random_inputs(spec, b, dtype=torch.float32, device=device)
        for backend in ["reference", *[x for x in backends if x != "reference"]]:
            row = {"op": "multitask_loss fwd+bwd (CUDA graph)", "backend": backend, "shape": f"B={b}"}
            if device.type != "cuda":
                results.append(row | {"error": "not measured: CUDA graphs need a CUDA device"})
                continue
            x = logits.clone().requires_grad_(True)

            def call(x=x, backend=backend, targets=targets, weights=weights):
                _, total = multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)
                return torch.autograd.grad(total, x)[0]

            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    call()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    call()
            except Exception as exc:  # a backend that cannot be captured: say so in the report
                results.append(row | {"error": f"capture failed: {type(exc).__name__}: {exc}"[:200]})
                continue
            t = timed(graph.replay, device)
            base = eager_reference.get(f"B={b}")
            results.append(row | {"median_s": t, "speedup": base / t if base else None})


def time_perturb(device, backends, n, copy_bw, results) -> None:
    theta, v = torch.randn(n, device=device), torch.randn(n, device=device)
    workspace = torch.empty(2, n, device=device)
    base = None
    runs = [(b, None) for b in ["reference", *[x for x in backends if x != "reference"]]]
    runs += [(b, workspace) for b in backends]  # into a kept [2, N] buffer, as the trainer calls it
    for backend, out in runs:
        t = timed(lambda backend=backend, out=out: perturb_pair(theta, v, backend=backend, out=out), device)
        base = t if backend == "reference" else base
        moved = 4 * n * 4  # the floor: read theta and v once, write two rows
        results.append(
            {
                "op": "perturb_pair" if out is None else "perturb_pair (out=)",
                "backend": backend,
                "shape": f"N={n}",
                "median_s": t,
                "speedup": base / t,
                "GBps": moved / t / 1e9,
                "pct_copy_bw": 100 * moved / t / copy_bw,
            }
        )


def merge(out: Path, dry_run: bool) -> dict:
    """``OUT/gpu_check.json``: the phases of gpu_check.sh (exit status, seconds), the op report and the step
    summaries of the run, with the card, torch/CUDA versions, commit and date; prints the step tables and
    every target verdict."""

    def load(name):
        path = out / name
        return json.loads(path.read_text()) if path.is_file() else None

    phases = {}
    for line in (out / "phases.txt").read_text().splitlines() if (out / "phases.txt").is_file() else []:
        name, rc, seconds = line.split()
        phases[name] = {"exit": int(rc), "seconds": int(seconds), "timed_out": rc == "124"}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report = {
        "dry_run": dry_run,
        "card": (out / "card.txt").read_text().strip() if (out / "card.txt").is_file() else "CPU (dry run)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "commit": commit.stdout.strip() or "unknown",
        "date": datetime.date.today().isoformat(),
        "phases": phases,
        "op_report": load("gpu_report.json"),
        "steps": {name: load(f"{name}.json") for name in ("step_fp32", "step_bf16", "step_r18")},
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(
        f"\n== gpu check{' (DRY RUN on the CPU)' if dry_run else ''}: {report['card']} | torch {report['torch']} "
        f"CUDA {report['cuda']} | commit {report['commit']} | {report['date']}"
    )
    for name, p in phases.items():
        print(f"phase {name:<14} exit {p['exit']:>3}  {p['seconds']:>4} s{'  TIMED OUT' if p['timed_out'] else ''}")
    for name, step in report["steps"].items():
        if step is not None:
            print(f"\n[{name}]\n{step['report']}")
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: check the script itself")
    ap.add_argument("--merge", action="store_true", help="write OUT/gpu_check.json from the run's parts")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge(args.out, args.dry_run)
        return 0
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    fused = [b for b in available(device) if b != "reference" and not (b == "triton" and device.type == "cpu")]
    toy = args.dry_run
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "card": card,
        "date": datetime.date.today().isoformat(),
        "commit": commit or "unknown",
        "torch": torch.__version__,
        "backends": fused,
        "checks": [],
        "timings": [],
    }
    print(f"card: {card}; torch {torch.__version__}; fused backends: {fused}", flush=True)

    report["copy_bandwidth_Bps"] = copy_bw = copy_bandwidth(device, (1 << 20) if toy else (1 << 30))
    check_loss(device, fused, [1, 2, 48] if toy else [1, 2, 48, 256, 1024], report["checks"])
    check_perturb(device, fused, 1000 if toy else 25_557_032, report["checks"])
    time_loss(device, fused, [48] if toy else [48, 256, 1024], report["timings"])
    time_loss_captured(device, fused, [48] if toy else [48, 256, 1024], report["timings"])
    time_perturb(device, fused, 10_000 if toy else 25_557_032, copy_bw, report["timings"])
    (args.out / "gpu_report.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    ok = bool(report["checks"]) and all(
        c["repeat_identical"]
        and c.get("guards_ok", True)
        and c["rel_err_loss"] < (1e-4 if c["dtype"] != "bfloat16" else 1e-2)
        and c["rel_err_grad"] < 1e-4
        for c in report["checks"]
    )
    print("ALL CHECKS PASS" if ok else "SOME CHECKS FAILED (or no fused backend was checked)")
    return 0 if ok else 1


def print_table(report: dict) -> None:
    print(f"\n== {report['card']} | torch {report['torch']} | commit {report['commit']} | {report['date']}")
    print(f"device-to-device copy: {report['copy_bandwidth_Bps'] / 1e9:.0f} GB/s (read + write)")
    print(f"{'check':<16}{'backend':<10}{'size':<10}{'dtype':<10}{'rel err out':>12}{'rel err grad':>13}{'repeat':>8}")
    for c in report["checks"]:
        size = f"B={c['B']}" if "B" in c else f"N={c['N']}"
        print(
            f"{c['check']:<16}{c['backend']:<10}{size:<10}{c['dtype']:<10}{c['rel_err_loss']:>12.2e}"
            f"{c['rel_err_grad']:>13.2e}{'same' if c['repeat_identical'] else 'DIFF':>8}"
        )
    print(
        f"\n{'op':<24}{'backend':<22}{'shape':<24}{'median':>12}{'speedup':>9}{'GB/s':>8}{'%copy':>7}{'peak MiB':>10}"
    )
    for t in report["timings"]:
        if "error" in t:
            print(f"{t['op']:<24} {t['backend']:<21} {t['shape']:<23} {t['error']}")
            continue
        gb = f"{t['GBps']:.0f}" if "GBps" in t else ""
        pct = f"{t['pct_copy_bw']:.0f}" if "pct_copy_bw" in t else ""
        peak = f"{t['peak_bytes'] / 2**20:.0f}" if t.get("peak_bytes") else ""
        sp = f"{t['speedup']:.2f}x" if t.get("speedup") else ""
        print(
            f"{t['op']:<24}{t['backend']:<22}{t['shape']:<24}{t['median_s'] * 1e3:>10.3f}ms{sp:>9}{gb:>8}{pct:>7}{peak:>10}"
        )


if __name__ == "__main__":
    sys.exit(main())
