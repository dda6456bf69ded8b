"""Detection with the frozen encoder: features, the one-class (GMM) and binary (MLP) detectors, their
files, metrics, tables, plots, robustness perturbations and evaluation."""

from bfdkern.detect.binary import BinaryDetector
from bfdkern.detect.encoder import FrozenEncoder, load_encoder
from bfdkern.detect.evaluation import evaluate_scores, format_table, write_results
from bfdkern.detect.features import ImageFeatures, Skipped, encoder_fingerprint, extract_features, image_features
from bfdkern.detect.metrics import (
    METRICS,
    accuracy,
    average_precision,
    detection_metrics,
    equal_error_rate,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)
from bfdkern.detect.oneclass import FitWarning, OneClassDetector
from bfdkern.detect.perturb import Perturbation
from bfdkern.detect.preprocess import ImageError, Preprocessing, list_images
from bfdkern.detect.serialization import DetectorFileError, check_encoder, load_detector, save_detector

auc = roc_auc
ap = average_precision

__all__ = [
    "METRICS",
    "BinaryDetector",
    "DetectorFileError",
    "FitWarning",
    "FrozenEncoder",
    "ImageError",
    "ImageFeatures",
    "OneClassDetector",
    "Perturbation",
    "Preprocessing",
    "Skipped",
    "accuracy",
    "auc",
    "ap",
    "average_precision",
    "check_encoder",
    "detection_metrics",
    "encoder_fingerprint",
    "equal_error_rate",
    "evaluate_scores",
    "extract_features",
    "format_table",
    "image_features",
    "list_images",
    "load_detector",
    "load_encoder",
    "roc_auc",
    "roc_curve",
    "save_detector",
    "tpr_at_fpr",
    "write_results",
]
