"""The `bfdkern` command line: one subcommand a module under :mod:`bfdkern.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Only the command that runs declares its options, and declaring options imports nothing heavy (see
:mod:`bfdkern.commands.options`), so ``bfdkern --help`` and ``bfdkern COMMAND --help`` do not import torch.
Output piped into a reader that stops early (``| head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings

from bfdkern.commands.options import apply_config_file

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


class _VersionAction(argparse.Action):
    """``--version``: reads the package metadata only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from bfdkern.version import __version__

        print(f"bfdkern {__version__}")
        parser.exit()


def _module(command: str):
    return importlib.import_module(f"bfdkern.commands.{COMMANDS[command]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bfdkern", description="Self-supervised AI-generated face detection (BLADES)")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
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


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _run(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command is None:
        # `bfdkern`, `bfdkern --help` or an unknown command: the full help, every command described.
        build_parser().parse_args(argv or ["--help"])
        return 2
    parser = build_parser(command)
    try:
        apply_config_file(_command_parser(parser, command), argv[1:])
    except (ValueError, OSError) as exc:
        print(f"bfdkern {command}: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    with _one_line_warnings(command):
        return int(_module(command).run(args) or 0)


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """Warnings printed while the command runs read ``bfdkern COMMAND: warning: ...`` on one line (not Python's
    two lines with the source file and code)."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: (
        f"bfdkern {command}: warning: {message}\n"
    )
    try:
        yield
    finally:
        warnings.formatwarning = previous


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's shutdown
        return status
    except BrokenPipeError:
        # The reader went away (`bfdkern ... | head`): stop quietly, as a process killed by SIGPIPE does.
        with contextlib.suppress(OSError, ValueError):  # ValueError: no real file descriptor (captured stdout)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # the shell's status for SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
