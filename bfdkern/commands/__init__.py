"""Subcommands of the `bfdkern` command line (see bfdkern.cli)."""
