"""The C++ fused loss (forward + backward through the public ``multitask_loss``) of two source trees side
by side, idle and beside two busy processes, on 1 and 2 threads.

    python -m benchmarks.compare_loss BEFORE_TREE AFTER_TREE [REPETITIONS]

Each measurement runs in a fresh process with ``PYTHONPATH`` set to its tree (each tree needs its own
built extension); the trees alternate, so load drifting on a shared machine hits both alike. The spec is
the 39-column BLADES spec that older trees also have (one column per ordinal task). Prints the medians,
2t/1t per tree, and after/before per thread count.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

BATCHES = {48: 400, 256: 200, 1024: 40}  # batch size: timed calls per measurement
LOADS = {"idle": 0, "loaded": 2}  # busy processes beside the measurement

CHILD = r"""
import json, statistics, sys, time, torch
import bfdkern
from bfdkern.tasks import blades_spec
try:
    spec = blades_spec(ordinal_levels=1)
except TypeError:  # a tree from before ordinal levels
    spec = blades_spec()
threads, batch, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
logits = torch.randn(batch, spec.num_columns, generator=g)
targets = spec.empty_targets(batch)
for k, t in enumerate(spec.tasks):
    hi = 4 if t.kind == "ordinal" else (2 if t.kind == "multilabel" else t.num_columns)
    targets[:, spec.target_columns(k)] = torch.randint(0, hi, (batch, t.num_targets), generator=g).float()
w = torch.ones(spec.num_tasks)
def step():
    x = logits.clone().requires_grad_(True)
    _, total = bfdkern.multitask_loss(x, targets, spec, w, backend="cpp", check_labels=False)
    total.backward()
for _ in range(20):
    step()
times = []
for _ in range(rounds):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps({"median": statistics.median(times)}))
"""

BUSY = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


def measure(tree: str, threads: int, batch: int) -> float:
    """Median seconds of one forward + backward in a fresh process of ``tree``."""
    env = {**os.environ, "PYTHONPATH": tree}
    args = [sys.executable, "-c", CHILD, str(threads), str(batch), str(BATCHES[batch])]
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["median"]


def main() -> None:
    trees = {"before": sys.argv[1], "after": sys.argv[2]}
    repetitions = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    results: dict[tuple, list[float]] = {}
    for load, busy_count in LOADS.items():
        busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy_count)]
        try:
            time.sleep(0.3)
            for batch in BATCHES:
                for rep in range(repetitions):
                    for name in ("before", "after") if rep % 2 == 0 else ("after", "before"):
                        for threads in (1, 2):
                            key = (load, batch, name, threads)
                            results.setdefault(key, []).append(measure(trees[name], threads, batch))
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
    med = {key: statistics.median(values) for key, values in results.items()}
    print(f"{'load':<7}{'B':>6}  {'tree':<7}{'1 thread ms':>12}{'2 threads ms':>14}{'2t/1t':>7}")
    for load in LOADS:
        for batch in BATCHES:
            for name in trees:
                one, two = med[(load, batch, name, 1)], med[(load, batch, name, 2)]
                print(f"{load:<7}{batch:>6}  {name:<7}{one * 1e3:>12.3f}{two * 1e3:>14.3f}{two / one:>7.2f}")
            for threads in (1, 2):
                ratio = med[(load, batch, "after", threads)] / med[(load, batch, "before", threads)]
                print(f"{'':<13}  after/before {threads} thread(s): {ratio:.3f}")


if __name__ == "__main__":
    main()
