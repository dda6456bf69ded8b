"""The encoder backbones by name (plain data: the command line offers them without importing torch)."""

BACKBONES = ("resnet50", "resnet18", "small")
"""``resnet50`` (the paper's), ``resnet18``, ``small`` (a tiny CNN for CPU runs on 64 x 64 images)."""
