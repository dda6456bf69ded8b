"""Helpers of the command tests."""

from bfdkern.cli import main


def common(root):
    """The options every command test passes: its own cache, no progress bar, the CPU."""
    return ["--cache-dir", str(root / "cache"), "--quiet", "--device", "cpu"]


def run_cli(capsys, argv):
    """(exit status, stdout, stderr) of ``bfdkern ARGV``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
