"""The encoder with packed task heads, where its weights start (random, ImageNet, a file, the authors'
checkpoints), its files (encoder files, exported folders) and their validation. Names load on first use
(:mod:`bfdkern.lazy`): the command line reads :mod:`bfdkern.models.choices` without torch."""

from bfdkern.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "choices": ("BACKBONES", "default_init"),
        "encoder": ("CHECKPOINT_NAME", "BladesModel", "load_model", "read_checkpoint", "save_model"),
        "files": ("SavedFileError",),
        "normalization": ("CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD"),
        "weights": ("build_model", "import_authors_encoder"),
    },
)
