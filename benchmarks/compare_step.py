"""Side-by-side timing of the bi-level step in two source trees (e.g. a change and the commit before it).

    python -m benchmarks.compare_step BEFORE_TREE AFTER_TREE [--case mlp|resnet18] [--variants fd,jvp]
        [--rounds 20] [--threads 1] [--json OUT]

One worker process per tree, each with ``PYTHONPATH`` set to its tree (so each imports its own
``bfdkern``), builds the same model, batches and one trainer per variant, and warms them up. The workers
then step in lockstep, driven by this process: for every round and variant, one step in each tree, the
order alternating (A B, B A, ...), so that load from other processes on a shared machine hits both trees
alike. Each step reports its wall time and the process CPU time (user + system, less sensitive to other
processes with one thread). Medians (and minima) per tree and variant are compared. The workers use only
the API both trees share: ``BilevelTrainer(model, spec, optimizer, mode=..., update_order=...)`` and
``step((x, y), (x, y))``.

Cases: ``mlp`` (512-1024-512 ReLU MLP, 1.07 M parameters, the 39 BLADES logits, batch 64 + 64) and
``resnet18`` (torchvision ResNet-18 at 64x64, B = 16, as ``bench_bilevel.py`` on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "fd": {"mode": "fd"},
    "fd_lagged": {"mode": "fd", "update_order": "lagged"},
    "jvp": {"mode": "jvp"},
    "unroll": {"mode": "unroll"},
}


def _worker(case: str, variants: list[str], threads: int) -> None:
    """Build the trainers, warm up, then answer ``step VARIANT`` lines with ``wall cpu`` seconds."""
    import torch

    torch.set_num_threads(threads)
    from bfdkern.bilevel import BilevelTrainer
    from bfdkern.tasks import blades_spec
    from tests.helpers import random_targets

    spec = blades_spec()
    batch, shape = (64, (512,)) if case == "mlp" else (16, (3, 64, 64))

    def model_for():
        torch.manual_seed(0)
        if case == "mlp":
            return torch.nn.Sequential(
                torch.nn.Linear(512, 1024),
                torch.nn.ReLU(),
                torch.nn.Linear(1024, 512),
                torch.nn.ReLU(),
                torch.nn.Linear(512, spec.num_columns),
            ).train()
        import torchvision

        return torchvision.models.resnet18(num_classes=spec.num_columns).train()

    def batch_for(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch, *shape, generator=g)
        y = random_targets(spec, batch, generator=g, dtype=torch.float32)
        for k in spec.outer_indices:
            y[:, spec.target_columns(k)] = torch.randint(0, 2, (batch, 1), generator=g).float()
        return x, y

    b_tr, b_val = batch_for(1), batch_for(2)
    trainers = {}
    for name in variants:
        model = model_for()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=1e-3)
        trainers[name] = BilevelTrainer(model, spec, opt, **VARIANTS[name])
        for _ in range(2):
            trainers[name].step(b_tr, b_val)
    print("ready", flush=True)
    for line in sys.stdin:
        command, name = line.split()
        if command != "step":
            break
        wall, cpu = time.perf_counter(), time.process_time()
        trainers[name].step(b_tr, b_val)
        print(f"{time.perf_counter() - wall} {time.process_time() - cpu}", flush=True)


def _start(tree: Path, args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads))
    argv = ["compare_step", "--worker", args.case, args.variants, str(args.threads)]
    # The worker runs this file's code against the tree's bfdkern (the tree need not hold this file).
    code = f"import sys; sys.argv = {argv!r}; exec(open({str(Path(__file__).resolve())!r}).read())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return proc


def _ready(proc: subprocess.Popen, tree: Path) -> None:
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"worker in {tree} did not start (said {line!r}); run it by hand to see its error")


def _step(proc: subprocess.Popen, name: str) -> tuple[float, float]:
    proc.stdin.write(f"step {name}\n")
    proc.stdin.flush()
    wall, cpu = proc.stdout.readline().split()
    return float(wall), float(cpu)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        _worker(argv[1], argv[2].split(","), int(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs=2, type=Path, help="BEFORE and AFTER source trees")
    ap.add_argument("--case", choices=["mlp", "resnet18"], default="mlp")
    ap.add_argument("--variants", default="fd,jvp")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write all samples here")
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    trees = [t.resolve() for t in args.trees]
    procs = [_start(t, args) for t in trees]
    for proc, tree in zip(procs, trees):
        _ready(proc, tree)
    samples = {side: {n: {"wall": [], "cpu": []} for n in names} for side in ("before", "after")}
    try:
        for r in range(args.rounds):
            for i, name in enumerate(names):
                order = (0, 1) if (r + i) % 2 == 0 else (1, 0)
                for side in order:
                    wall, cpu = _step(procs[side], name)
                    samples[("before", "after")[side]][name]["wall"].append(wall)
                    samples[("before", "after")[side]][name]["cpu"].append(cpu)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(timeout=60)
    med = {
        s: {n: {k: statistics.median(v) for k, v in d.items()} for n, d in per.items()} for s, per in samples.items()
    }
    low = {s: {n: {k: min(v) for k, v in d.items()} for n, d in per.items()} for s, per in samples.items()}
    print(
        f"case {args.case}, {args.threads} thread(s), {args.rounds} lockstep rounds; before {trees[0]}, after {trees[1]}"
    )
    print(f"{'variant':<12}{'clock':<6}{'before':>10}{'after':>10}{'after/before':>14}{'min ratio':>11}")
    for n in names:
        for k in ("wall", "cpu"):
            b, a = med["before"][n][k], med["after"][n][k]
            print(f"{n:<12}{k:<6}{b:>10.4f}{a:>10.4f}{a / b:>14.3f}{low['after'][n][k] / low['before'][n][k]:>11.3f}")
    if "jvp" in names and "fd" in names:
        for k in ("wall", "cpu"):
            ratios = [med[s]["jvp"][k] / med[s]["fd"][k] for s in ("before", "after")]
            print(f"jvp / fd ({k}): before {ratios[0]:.3f}, after {ratios[1]:.3f}")
    if args.json:
        out = {"case": args.case, "trees": [str(t) for t in trees], "samples": samples, "medians": med}
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
