"""The encoder with packed task heads, and its checkpoints."""

from bfdkern.models.encoder import (
    BACKBONES,
    CHECKPOINT_NAME,
    BladesModel,
    load_backbone_weights,
    load_model,
    read_checkpoint,
    save_model,
)

__all__ = [
    "BACKBONES",
    "CHECKPOINT_NAME",
    "BladesModel",
    "load_backbone_weights",
    "load_model",
    "read_checkpoint",
    "save_model",
]
