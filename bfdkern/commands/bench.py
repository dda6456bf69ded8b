"""`bfdkern bench`: a quick table of the fused loss (forward + backward) on every available
backend against the reference, on this machine. The full suite is `pytest --benchmark`."""

from __future__ import annotations

import statistics
import time

HELP = "time the fused multi-task loss (forward + backward) per backend against the reference"


def add_arguments(parser) -> None:
    from bfdkern.commands.options import DEVICE_HELP

    parser.add_argument("--batch", type=int, nargs="+", default=[48, 256, 1024], help="batch sizes B")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per case (median reported)")


def _time(fn, repeats: int, device) -> float:
    """Median seconds of fn() after a warm-up, synchronising the device around each call."""
    import torch

    fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def run(args) -> int:
    from bfdkern.commands.options import run_command

    return run_command("bench", lambda: _bench(args), device=args.device)


def _bench(args) -> int:
    import torch

    from bfdkern.devices import resolve_device
    from bfdkern.ops import available, multitask_loss
    from bfdkern.tasks import blades_spec

    device = resolve_device(args.device)
    spec = blades_spec()
    backends = [b for b in available(device) if not (b == "triton" and device.type == "cpu")]
    print(f"multitask_loss forward+backward, BLADES spec (K={spec.num_tasks}, C={spec.num_columns}), {device}")
    print(f"{'B':>6} {'backend':>10} {'median ms':>10} {'speedup':>8}")
    gen = torch.Generator().manual_seed(0)
    for b in args.batch:
        logits = torch.randn(b, spec.num_columns, generator=gen).to(device)
        targets = spec.empty_targets(b)
        for k, task in enumerate(spec.tasks):
            hi = 4 if task.kind == "ordinal" else (2 if task.kind == "multilabel" else task.num_columns)
            targets[:, spec.target_columns(k)] = torch.randint(0, hi, (b, task.num_targets), generator=gen).float()
        targets = targets.to(device)
        weights = torch.ones(spec.num_tasks, device=device)
        times = {}
        for backend in backends:
            x = logits.clone().requires_grad_(True)

            def step(x=x, backend=backend, targets=targets, weights=weights):
                _, total = multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)
                total.backward()

            times[backend] = _time(step, args.repeats, device)
            speedup = times["reference"] / times[backend]
            print(f"{b:>6} {backend:>10} {times[backend] * 1e3:>10.3f} {speedup:>7.2f}x")
    return 0
