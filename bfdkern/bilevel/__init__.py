"""Bi-level task weighting: the virtual step, the paired perturbation evaluation, three
hypergradient modes that agree, and :class:`BilevelTrainer`."""

from bfdkern.bilevel.check import HypergradCheck, check_hypergrad
from bfdkern.bilevel.hypergradient import MODES, Hypergradient, hypergradient
from bfdkern.bilevel.paired_eval import paired_losses
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.trainer import BilevelTrainer, StepRecord
from bfdkern.bilevel.virtual_step import VirtualStep

__all__ = [
    "MODES",
    "BilevelTrainer",
    "HypergradCheck",
    "Hypergradient",
    "ParamLayout",
    "StepRecord",
    "VirtualStep",
    "check_hypergrad",
    "hypergradient",
    "paired_losses",
]
