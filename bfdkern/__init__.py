"""bfdkern: self-supervised AI-generated face detection by bi-level optimization (BLADES),
with fused kernels for the multi-task loss and the bi-level hypergradient."""

from bfdkern.ops import multitask_loss, perturb_pair
from bfdkern.tasks import MISSING, Task, TaskSpec, blades_spec

__version__ = "0.1.0"

__all__ = ["MISSING", "Task", "TaskSpec", "__version__", "blades_spec", "multitask_loss", "perturb_pair"]


def __getattr__(name):
    # The trainer pulls in torch.func and the models; import it lazily.
    if name == "BilevelTrainer":
        from bfdkern.bilevel import BilevelTrainer

        return BilevelTrainer
    raise AttributeError(f"module 'bfdkern' has no attribute {name!r}")
