"""`bfdkern demo [--out DIR]`: the whole method on simulated camera photos, on the CPU, with no data or
network (about a minute and a half on 2 cores)."""

from __future__ import annotations

import sys

from bfdkern.commands.options import run_command

HELP = "run the whole method on simulated camera photos (CPU, no data needed, ~2 minutes)"


def add_arguments(parser) -> None:
    from bfdkern.recipes.demo_settings import DemoSettings

    d = DemoSettings()
    parser.add_argument(
        "--out",
        default="bfdkern-demo",
        metavar="DIR",
        help="folder for the photos, the run and the plots (default ./bfdkern-demo; an earlier demo there is replaced)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"stop pretraining after this many steps (default: the whole schedule, {d.epochs} epochs)",
    )
    parser.add_argument(
        "--seed", type=int, default=d.seed, help=f"seed of the simulation and training (default {d.seed})"
    )
    parser.add_argument(
        "--workers", type=int, default=d.workers, help=f"DataLoader workers per batch stream (default {d.workers})"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help=f"torch threads for the model (default {d.threads}: the small model gains nothing "
        "from more on a busy CPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from bfdkern.recipes.demo import run_demo
    from bfdkern.recipes.demo_settings import DemoSettings

    if args.steps is not None and args.steps < 1:
        print(f"bfdkern demo: error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    settings = DemoSettings(seed=args.seed, workers=args.workers, threads=args.threads, max_steps=args.steps)

    def body() -> int:
        try:
            run_demo(args.out, settings, progress=not args.quiet)
        except KeyboardInterrupt:
            print("bfdkern demo: interrupted", file=sys.stderr)
            return 130
        return 0

    return run_command("demo", body)
