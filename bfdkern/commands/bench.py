"""`bfdkern bench`: a quick table of the fused loss (forward + backward) on every available
backend against the reference, on this machine. The full suite is `pytest --benchmark`.

Every figure is the median of repeated timed runs (``torch.utils.benchmark.Timer.blocked_autorange``
after a warm-up call), never one call: a cold first call (allocator, Triton compile, lazy loading)
cannot make a ratio."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bfdkern.commands.options import DEVICE_HELP, run_command

if TYPE_CHECKING:
    import torch

HELP = "time the fused multi-task loss (forward + backward) per backend against the reference"


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, nargs="+", default=[48, 256, 1024], help="batch sizes B")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument(
        "--min-time", type=float, default=0.5, help="seconds of timed runs per case (after one warm-up call)"
    )


def measure(fn, device: torch.device, min_time: float):
    """A ``torch.utils.benchmark`` Measurement of fn(): one warm-up call, then blocks of calls for at
    least ``min_time`` seconds (the CUDA device synchronised around each block), on torch's current
    thread count. ``.median`` and ``.iqr`` are seconds per call, ``.times`` one entry per block."""
    import torch
    from torch.utils import benchmark

    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_time)


def run(args) -> int:
    return run_command("bench", lambda: _bench(args), device=args.device)


def _bench(args) -> int:
    import torch

    from bfdkern.devices import resolve_device
    from bfdkern.ops import available, multitask_loss
    from bfdkern.tasks import blades_spec

    device = resolve_device(args.device)
    spec = blades_spec()
    backends = [b for b in available(device) if not (b == "triton" and device.type == "cpu")]
    print(
        f"multitask_loss forward+backward, BLADES spec (K={spec.num_tasks}, C={spec.num_columns}), {device}, "
        f"{torch.get_num_threads()} threads; median of timed runs after a warm-up"
    )
    print(f"{'B':>6} {'backend':>10} {'median ms':>10} {'IQR ms':>8} {'runs':>6} {'speedup':>8}")
    gen = torch.Generator().manual_seed(0)
    for b in args.batch:
        logits = torch.randn(b, spec.num_columns, generator=gen).to(device)
        targets = spec.empty_targets(b)
        for k, task in enumerate(spec.tasks):
            hi = 4 if task.kind == "ordinal" else (2 if task.kind == "multilabel" else task.num_columns)
            targets[:, spec.target_columns(k)] = torch.randint(0, hi, (b, task.num_targets), generator=gen).float()
        targets = targets.to(device)
        weights = torch.ones(spec.num_tasks, device=device)
        medians = {}
        for backend in backends:
            x = logits.clone().requires_grad_(True)

            def step(x=x, backend=backend, targets=targets, weights=weights):
                x.grad = None
                _, total = multitask_loss(x, targets, spec, weights, backend=backend, check_labels=False)
                total.backward()

            m = measure(step, device, args.min_time)
            medians[backend] = m.median
            runs = m.number_per_run * len(m.times)
            speedup = medians["reference"] / m.median
            print(f"{b:>6} {backend:>10} {m.median * 1e3:>10.3f} {m.iqr * 1e3:>8.3f} {runs:>6} {speedup:>7.2f}x")
    return 0
