"""The `bfdkern` command line: one subcommand a module under :mod:`bfdkern.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so `bfdkern --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

COMMANDS = {
    "demo": "demo",
    "index": "index",
    "summary": "summary",
    "pretrain": "pretrain",
    "fit-oneclass": "fit_oneclass",
    "fit-binary": "fit_binary",
    "fit-baseline": "fit_baseline",
    "detect": "detect",
    "evaluate": "evaluate",
    "ablate": "ablate",
    "import-weights": "import_weights",
    "export": "export",
    "bench": "bench",
}


def _version() -> str:
    try:
        return version("bfdkern")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def _module(command: str):
    return importlib.import_module(f"bfdkern.commands.{COMMANDS[command]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bfdkern", description="Self-supervised AI-generated face detection (BLADES)")
    parser.add_argument("--version", action="version", version=f"bfdkern {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if command is not None and name != command:
            sub.add_parser(name)
            continue
        mod = _module(name)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        if name == command:  # only the command that runs declares its options (they import what they need)
            mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command is None:
        # `bfdkern`, `bfdkern --help` or an unknown command: the full help, every command described.
        build_parser().parse_args(argv or ["--help"])
        return 2
    args = build_parser(command).parse_args(argv)
    return int(_module(command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
