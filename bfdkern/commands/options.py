"""Command-line options shared by the detection commands (fit-oneclass, fit-binary, detect, evaluate)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bfdkern.detect.preprocess import Preprocessing

SMALL_BACKBONE_SIZE = 64
"""Input side of the "small" CPU backbone; the ResNets take 224."""


def add_fit_arguments(parser) -> None:
    """--encoder and --real, shared by the commands that fit a detector."""
    parser.add_argument(
        "--encoder",
        required=True,
        metavar="RUN",
        help="run directory (RUN/encoder.pt) or checkpoint; or a user encoder: torchscript:FILE, "
        "torchvision:ARCH:FILE (see `bfdkern evaluate --list`)",
    )
    parser.add_argument(
        "--real", required=True, metavar="DIR", help="folder of real face images (searched recursively)"
    )


def load_fit_encoder(args):
    """The frozen encoder that --encoder names (a run, a checkpoint or a user encoder)."""
    from bfdkern.detect.encoder import load_frozen_encoder, source_of

    return load_frozen_encoder(source_of(args.encoder))


def add_feature_arguments(parser) -> None:
    """--batch-size, --device, --cache-dir, --no-cache, --workers, --quiet."""
    g = parser.add_argument_group("feature extraction")
    g.add_argument("--batch-size", type=int, default=32, help="images per encoder forward pass (default 32)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    g.add_argument(
        "--cache-dir", default=None, help="feature cache root (default $BFDKERN_CACHE_DIR or ~/.cache/bfdkern/features)"
    )
    g.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    g.add_argument("--workers", type=int, default=2, help="threads decoding images (default 2)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def add_preprocessing_arguments(parser) -> None:
    """--jpeg-quality, --face-crop/--no-face-crop, --face-scale, --size (used when fitting; stored in the
    detector file and reused by detect and evaluate)."""
    g = parser.add_argument_group("preprocessing (identical for every image; stored in the detector file)")
    g.add_argument(
        "--jpeg-quality",
        type=int,
        default=95,
        help="re-encode every image as JPEG at this quality, 0 = keep decoded pixels (default 95)",
    )
    g.add_argument(
        "--face-crop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop each image to its largest face, OpenCV Haar cascade (default: as in the encoder's pretraining)",
    )
    g.add_argument("--face-scale", type=float, default=1.3, help="face box enlargement before the crop (1.3)")
    g.add_argument(
        "--size",
        type=int,
        default=None,
        help="encoder input side in pixels (default: the pretraining image size; else 64 for the small "
        "backbone, 224 for the ResNets)",
    )


def preprocessing_from_args(args, encoder_config: dict) -> Preprocessing:
    """The :class:`Preprocessing` the fit commands' options ask for; unset options follow the encoder's
    pretraining (``image_size``, ``face_crop`` in ``encoder_config``)."""
    size = args.size or encoder_config.get("image_size")
    if size is None:
        size = SMALL_BACKBONE_SIZE if encoder_config.get("backbone") == "small" else 224
    face_crop = args.face_crop if args.face_crop is not None else bool(encoder_config.get("face_crop", False))
    return Preprocessing(
        jpeg_quality=args.jpeg_quality or None, face_crop=face_crop, face_scale=args.face_scale, size=int(size)
    )


def feature_kwargs(args) -> dict:
    """Keyword arguments of :meth:`bfdkern.detect.FrozenEncoder.features` from the feature options."""
    from bfdkern.detect.features import default_cache_dir

    cache = None if args.no_cache else (args.cache_dir or default_cache_dir())
    return {
        "batch_size": args.batch_size,
        "device": args.device,
        "cache_dir": cache,
        "num_workers": args.workers,
        "progress": not args.quiet,
    }


def run_command(name: str, body: Callable[[], int]) -> int:
    """Run ``body``; a bad input (ValueError, OSError) is printed as ``bfdkern NAME: error: ...`` and gives
    exit status 2."""
    try:
        return int(body() or 0)
    except (ValueError, OSError) as exc:
        print(f"bfdkern {name}: error: {exc}", file=sys.stderr)
        return 2


EXIT_PARTIAL = 3
"""Exit status of a detection command that skipped unreadable images, under --strict (without it: 0)."""


def add_strict_argument(parser) -> None:
    """--strict: exit with status 3 when any image was skipped (the run still finishes and writes its results)."""
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 3 when any image was unreadable and skipped (default: skip it, say so, exit 0)",
    )


def skipped_status(name: str, skipped, total: int, strict: bool) -> int:
    """Say how many of ``total`` images were skipped and why (one line on stderr) and give the exit status:
    0, or :data:`EXIT_PARTIAL` under ``strict`` when any was skipped."""
    if not skipped:
        return 0
    from bfdkern.detect.features import skipped_summary

    first = skipped[0]
    print(
        f"bfdkern {name}: skipped {skipped_summary(skipped)} of {total} images as unreadable, e.g. {first.message}",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if strict else 0
