"""Public ops: fused multi-task loss and paired perturbation, registered with torch.library."""

from bfdkern.ops.backends import BACKENDS, Backend
from bfdkern.ops.dispatch import BackendUnavailable, available, select
from bfdkern.ops.multitask_loss import multitask_loss
from bfdkern.ops.perturb import perturb_pair

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "available", "multitask_loss", "perturb_pair", "select"]
