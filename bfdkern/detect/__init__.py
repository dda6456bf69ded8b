"""Detection with the frozen encoder: features, the one-class (GMM) and binary (MLP) detectors, their
files, metrics, plots and evaluation."""

from bfdkern.detect.binary import BinaryDetector
from bfdkern.detect.encoder import FrozenEncoder, load_encoder
from bfdkern.detect.evaluation import evaluate_scores, format_table, write_results
from bfdkern.detect.features import encoder_fingerprint, extract_features
from bfdkern.detect.metrics import accuracy, average_precision, roc_auc, roc_curve
from bfdkern.detect.oneclass import OneClassDetector
from bfdkern.detect.preprocess import ImageError, Preprocessing, list_images
from bfdkern.detect.serialization import DetectorFileError, check_encoder, load_detector, save_detector

auc = roc_auc
ap = average_precision

__all__ = [
    "BinaryDetector",
    "DetectorFileError",
    "FrozenEncoder",
    "ImageError",
    "OneClassDetector",
    "Preprocessing",
    "accuracy",
    "auc",
    "ap",
    "average_precision",
    "check_encoder",
    "encoder_fingerprint",
    "evaluate_scores",
    "extract_features",
    "format_table",
    "list_images",
    "load_detector",
    "load_encoder",
    "roc_auc",
    "roc_curve",
    "save_detector",
    "write_results",
]
