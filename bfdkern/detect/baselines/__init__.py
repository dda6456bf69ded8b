"""Competing detectors reimplemented for comparison with BLADES (see docs/baselines.md)."""

from bfdkern.detect.baselines.cnnd import BlurJpeg, CNNDetector
from bfdkern.detect.baselines.gramnet import GramNetDetector
from bfdkern.detect.baselines.hu21 import CornealHighlightDetector, highlight_iou, highlight_mask

__all__ = ["BlurJpeg", "CNNDetector", "GramNetDetector", "CornealHighlightDetector", "highlight_iou", "highlight_mask"]
