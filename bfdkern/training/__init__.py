"""BLADES pretraining runs: configuration with the paper's defaults, the run loop on
:class:`~bfdkern.bilevel.BilevelTrainer`, exact resume from atomic checkpoints, the step log, plots,
and each task's chance level."""

from bfdkern.training.chance import chance_losses
from bfdkern.training.checkpoint import load_checkpoint, save_checkpoint
from bfdkern.training.config import PretrainConfig
from bfdkern.training.log import StepLog, read_log
from bfdkern.training.run import Pretraining, PretrainResult, format_losses, pretrain
from bfdkern.training.streams import BatchStream

__all__ = [
    "BatchStream",
    "PretrainConfig",
    "PretrainResult",
    "Pretraining",
    "StepLog",
    "chance_losses",
    "format_losses",
    "load_checkpoint",
    "pretrain",
    "read_log",
    "save_checkpoint",
]
