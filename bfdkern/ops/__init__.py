"""Public ops: fused multi-task loss and paired perturbation, registered with torch.library."""

from bfdkern.ops.dispatch import BACKENDS, BackendUnavailable, available, select
from bfdkern.ops.multitask_loss import multitask_loss
from bfdkern.ops.perturb import perturb_pair

__all__ = ["BACKENDS", "BackendUnavailable", "available", "multitask_loss", "perturb_pair", "select"]
