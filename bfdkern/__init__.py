"""bfdkern: self-supervised AI-generated face detection by bi-level optimization (BLADES),
with fused kernels for the multi-task loss and the bi-level hypergradient.

The public names load on first use, so that ``bfdkern --help`` and ``import bfdkern.tasks`` do not
pay for torch's import until something needs it."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bfdkern")  # one place: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "multitask_loss": "bfdkern.ops",
    "perturb_pair": "bfdkern.ops",
    "MISSING": "bfdkern.tasks",
    "Task": "bfdkern.tasks",
    "TaskSpec": "bfdkern.tasks",
    "blades_spec": "bfdkern.tasks",
    "BilevelTrainer": "bfdkern.bilevel",
}

__all__ = [
    "BilevelTrainer",
    "MISSING",
    "Task",
    "TaskSpec",
    "__version__",
    "blades_spec",
    "multitask_loss",
    "perturb_pair",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bfdkern' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
