"""Subcommands of the `bfdkern` command line (see bfdkern.cli).

Imports here follow one convention, for start-up time: ``bfdkern --help`` imports every command module and
``bfdkern COMMAND --help`` runs that command's ``add_arguments``, and neither may import torch, NumPy, Pillow,
scikit-learn, matplotlib, SciPy or OpenCV (tests/test_cli.py checks it). So a command module imports at its top
only the standard library and :mod:`bfdkern.commands` modules (torch-free); ``add_arguments`` imports the
torch-free modules its choices come from (the packages' ``choices`` modules, the presets); everything else,
heavy or not, is imported inside ``run`` and the functions it calls. These function-local imports carry no
``# lazy:`` comment, unlike those of the library (tests/test_architecture.py).
"""
