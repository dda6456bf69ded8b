"""Detection with the frozen encoder: features, the one-class (GMM) and binary (MLP) detectors, their
files, metrics, tables, plots, robustness perturbations and evaluation. Names load on first use
(:mod:`bfdkern.lazy`): the command line reads :mod:`bfdkern.detect.choices` without torch."""

from bfdkern.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "binary": ("BinaryDetector",),
        "encoder": ("FrozenEncoder", "load_encoder"),
        "evaluation": ("evaluate_scores", "format_table", "write_results"),
        "features": ("ImageFeatures", "Skipped", "encoder_fingerprint", "extract_features", "image_features"),
        "metrics": (
            "METRICS",
            "accuracy",
            "average_precision",
            "detection_metrics",
            "equal_error_rate",
            "roc_auc",
            "roc_curve",
            "tpr_at_fpr",
        ),
        "oneclass": ("FitWarning", "OneClassDetector"),
        "perturb": ("Perturbation",),
        "preprocess": ("ImageError", "Preprocessing", "list_images"),
        "serialization": ("DetectorFileError", "check_encoder", "load_detector", "save_detector"),
    },
    aliases={"auc": ("metrics", "roc_auc"), "ap": ("metrics", "average_precision")},
)
