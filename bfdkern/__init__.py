"""bfdkern: self-supervised AI-generated face detection by bi-level optimization (BLADES),
with fused kernels for the multi-task loss and the bi-level hypergradient.

The public names load on first use, so that ``bfdkern --help`` and ``import bfdkern.tasks`` do not
pay for torch's import until something needs it."""

from __future__ import annotations

from bfdkern.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ops": ("multitask_loss", "perturb_pair"),
        "tasks": ("MISSING", "Task", "TaskSpec", "blades_spec"),
        "bilevel": ("BilevelTrainer",),
        "version": ("__version__",),
    },
)
