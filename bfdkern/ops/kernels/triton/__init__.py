"""Triton kernels of the fused ops: :mod:`.multitask_loss` (forward and backward of the per-task
pretext loss) and :mod:`.perturb` (the paired perturbation theta +- eps v), with the special
functions they share in :mod:`.special`.

They run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (set before triton is
imported). Submodules import triton; this package does not, so importing it is free.
"""

import os


def interpreting() -> bool:
    """Triton runs under its CPU interpreter (``TRITON_INTERPRET=1``, read when triton is imported)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
