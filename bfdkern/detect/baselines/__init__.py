"""Competing detectors reimplemented for comparison with BLADES (see docs/baselines.md)."""

from bfdkern.detect.baselines.hu21 import CornealHighlightDetector, highlight_iou, highlight_mask

__all__ = ["CornealHighlightDetector", "highlight_iou", "highlight_mask"]
