"""Bi-level task weighting: the loss seam (:class:`Objective`), the virtual step, the paired perturbation
evaluation, three hypergradient modes that agree, and :class:`BilevelTrainer`."""

from bfdkern.bilevel.check import HypergradCheck, check_hypergrad
from bfdkern.bilevel.checks import Condition
from bfdkern.bilevel.config import TrainerConfig
from bfdkern.bilevel.forward_mode import ForwardModeError
from bfdkern.bilevel.hypergradient import hypergradient
from bfdkern.bilevel.modes import (
    MODES,
    FiniteDifference,
    ForwardMode,
    Hypergradient,
    HypergradientMode,
    Unrolled,
    get_mode,
)
from bfdkern.bilevel.objective import BatchChecks, Objective, SpecObjective
from bfdkern.bilevel.paired_eval import paired_losses
from bfdkern.bilevel.params import ParamLayout
from bfdkern.bilevel.trainer import BilevelTrainer, StepRecord
from bfdkern.bilevel.virtual_step import VirtualStep
from bfdkern.bilevel.weights import TaskWeights

__all__ = [
    "MODES",
    "BatchChecks",
    "BilevelTrainer",
    "Condition",
    "FiniteDifference",
    "ForwardMode",
    "ForwardModeError",
    "HypergradCheck",
    "Hypergradient",
    "HypergradientMode",
    "Objective",
    "ParamLayout",
    "SpecObjective",
    "StepRecord",
    "TaskWeights",
    "TrainerConfig",
    "Unrolled",
    "VirtualStep",
    "check_hypergrad",
    "get_mode",
    "hypergradient",
    "paired_losses",
]
