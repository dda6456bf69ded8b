"""BLADES pretraining runs: configuration with the paper's defaults, the run loop on
:class:`~bfdkern.bilevel.BilevelTrainer`, exact resume from atomic checkpoints, the step log, plots,
and each task's chance level. Names load on first use (:mod:`bfdkern.lazy`): the command line reads
:mod:`bfdkern.training.config` without torch."""

from bfdkern.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "chance": ("chance_losses",),
        "checkpoint": ("load_checkpoint", "save_checkpoint"),
        "config": ("PretrainConfig",),
        "log": ("StepLog", "read_log"),
        "run": ("Pretraining", "PretrainResult", "format_losses", "pretrain"),
        "streams": ("BatchStream",),
    },
)
