"""The encoder with packed task heads, and its checkpoints. Names load on first use
(:mod:`bfdkern.lazy`): the command line reads :mod:`bfdkern.models.choices` without torch."""

from bfdkern.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "choices": ("BACKBONES",),
        "encoder": (
            "CHECKPOINT_NAME",
            "BladesModel",
            "load_backbone_weights",
            "load_model",
            "read_checkpoint",
            "save_model",
        ),
    },
)
