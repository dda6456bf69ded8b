"""Bi-level task weighting: the virtual step, the paired perturbation evaluation, three
hypergradient modes that agree, and :class:`BilevelTrainer`. Names load on first use
(:mod:`bfdkern.lazy`): the command line reads :mod:`bfdkern.bilevel.choices` without torch."""

from bfdkern.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "check": ("HypergradCheck", "check_hypergrad"),
        "choices": ("MODES",),
        "hypergradient": ("Hypergradient", "hypergradient"),
        "paired_eval": ("paired_losses",),
        "params": ("ParamLayout",),
        "trainer": ("BilevelTrainer", "StepRecord"),
        "virtual_step": ("VirtualStep",),
    },
)
