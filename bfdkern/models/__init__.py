"""The encoder with packed task heads, where its weights start (random, ImageNet, a file, the authors'
checkpoints), its files (encoder files, exported folders) and their validation."""

from bfdkern.models.architecture import BACKBONES
from bfdkern.models.encoder import (
    CHECKPOINT_NAME,
    BladesModel,
    load_model,
    read_checkpoint,
    save_model,
)
from bfdkern.models.files import SavedFileError
from bfdkern.models.normalization import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from bfdkern.models.weights import build_model, default_init, import_authors_encoder

__all__ = [
    "BACKBONES",
    "CHECKPOINT_NAME",
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BladesModel",
    "SavedFileError",
    "build_model",
    "default_init",
    "import_authors_encoder",
    "load_model",
    "read_checkpoint",
    "save_model",
]
