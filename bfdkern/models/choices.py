"""The encoder backbones and the names of where their weights start (plain data and checks: the command line and
the run configuration use them without importing torch; the loading is :mod:`bfdkern.models.weights`)."""

BACKBONES = ("resnet50", "resnet18", "small")
"""``resnet50`` (the paper's), ``resnet18``, ``small`` (a tiny CNN for CPU runs on 64 x 64 images)."""

RANDOM = "random"
IMAGENET = "imagenet"
IMAGENET_WEIGHTS = {"resnet50": ("IMAGENET1K_V1", "IMAGENET1K_V2"), "resnet18": ("IMAGENET1K_V1",)}
"""torchvision's ImageNet weights per backbone; the first is what ``imagenet`` means."""


def default_init(backbone: str) -> str:
    """The paper's start for ``backbone``: ImageNet weights for the ResNets, random for the small CPU backbone."""
    return IMAGENET if backbone in IMAGENET_WEIGHTS else RANDOM


def check_init(init: str, backbone: str) -> None:
    """Raise ValueError when ``init`` cannot start ``backbone`` (an ImageNet start of the small backbone, an
    unknown ImageNet weights name). Files are checked when loaded."""
    if not isinstance(init, str) or not init:
        raise ValueError(f"init must be 'random', 'imagenet[:WEIGHTS]' or a file, got {init!r}")
    if init == RANDOM or not init.startswith(IMAGENET):
        return
    name = init.partition(":")[2]
    if backbone not in IMAGENET_WEIGHTS:
        raise ValueError(f"init {init!r}: the {backbone} backbone has no ImageNet weights; use init 'random'")
    if name and name not in IMAGENET_WEIGHTS[backbone]:
        raise ValueError(f"init {init!r}: {backbone} has ImageNet weights {list(IMAGENET_WEIGHTS[backbone])}")
    if init != IMAGENET and not name:
        raise ValueError(f"init {init!r}: expected 'imagenet' or 'imagenet:WEIGHTS'")


def is_file_init(init: str) -> bool:
    """Whether ``init`` names a file (not ``random`` or ``imagenet[:WEIGHTS]``)."""
    return init != RANDOM and init != IMAGENET and not init.startswith(IMAGENET + ":")
