"""`bfdkern fit-oneclass --encoder RUN --real DIR -o FILE`: fit the one-class (Gaussian mixture) detector
on the frozen encoder's features of real face images."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from bfdkern.commands.options import (
    add_feature_arguments,
    add_fit_arguments,
    add_preprocessing_arguments,
    add_strict_argument,
    feature_kwargs,
    load_fit_encoder,
    preprocessing_from_args,
    run_command,
    skipped_status,
)

HELP = "fit the one-class detector: a Gaussian mixture on real faces' features (score = log-likelihood)"


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    from bfdkern.detect.choices import COVARIANCE_TYPES

    add_fit_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="detector file to write (.npz)")
    g = parser.add_argument_group("mixture")
    g.add_argument("--components", type=int, default=10, help="mixture components (default 10)")
    g.add_argument("--covariance", choices=COVARIANCE_TYPES, default="full", help="covariance type (default full)")
    g.add_argument(
        "--false-alarm",
        "--false-alarm-rate",
        dest="false_alarm_rate",
        type=float,
        default=0.05,
        metavar="RATE",
        help="fraction of the calibration reals the threshold calls fake (default 0.05, the paper's 5%%)",
    )
    g.add_argument(
        "--calibration",
        metavar="FRACTION|DIR",
        default=None,
        help="set the threshold on held-out reals: a fraction of --real drawn with --seed (e.g. 0.2), or a folder "
        "of other real images (default: on the fit set itself, in-sample, with a warning)",
    )
    g.add_argument("--seed", type=int, default=0, help="k-means++ initialisation seed (default 0)")
    g.add_argument("--max-iter", type=int, default=100, help="EM iterations at most (default 100)")
    g.add_argument("--reg-covar", type=float, default=1e-6, help="added to the covariance diagonals (default 1e-6)")
    g.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="fit on the features as they are, not L2-normalised (Zou25: with --encoder embedding:RUN)",
    )
    add_preprocessing_arguments(parser)
    add_feature_arguments(parser)
    add_strict_argument(parser)


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    return run_command("fit-oneclass", lambda: _fit(args), device=args.device)


def _split_calibration(args, paths: list) -> tuple[list, list]:
    """(fit paths, calibration paths) from --calibration: none, a seeded fraction of ``paths``, or a folder."""
    import numpy as np

    from bfdkern.detect import list_images

    if args.calibration is None:
        return paths, []
    try:
        fraction = float(args.calibration)
    except ValueError:
        if not Path(args.calibration).is_dir():
            raise ValueError(f"--calibration {args.calibration!r}: expected a fraction in (0, 1) or a folder") from None
        return paths, list_images(args.calibration)
    if not 0 < fraction < 1:
        raise ValueError(f"--calibration {args.calibration}: a held-out fraction must be in (0, 1)")
    n_cal = int(round(fraction * len(paths)))
    if n_cal < 1 or n_cal >= len(paths):
        raise ValueError(f"--calibration {fraction}: of {len(paths)} images leaves no calibration or no fit image")
    held = set(np.random.default_rng([args.seed, 1]).choice(len(paths), n_cal, replace=False).tolist())
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


def _fit(args) -> int:
    from bfdkern.detect import OneClassDetector, list_images, save_detector
    from bfdkern.detect.features import image_features, skipped_record, warn_no_face
    from bfdkern.detect.oneclass import FitWarning
    from bfdkern.detect.plots import plot_fit_scores
    from bfdkern.models import BladesModel

    paths, calibration = _split_calibration(args, list_images(args.real))
    encoder = load_fit_encoder(args)
    if not args.normalize and isinstance(encoder.module, BladesModel):
        # A BLADES run's features are already unit vectors: not normalising them again changes nothing.
        print(
            f"bfdkern fit-oneclass: note: {args.encoder} gives L2-normalised features, so --no-normalize changes "
            f"nothing; for the un-normalised embedding (Zou25) use --encoder embedding:{args.encoder}",
            file=sys.stderr,
        )
    prep = preprocessing_from_args(args, encoder.identity["config"])
    kw = {**feature_kwargs(args), "preprocessing": prep, "encoder_id": encoder.fingerprint}
    fit = image_features(encoder.module, paths, **kw)
    cal = image_features(encoder.module, calibration, **kw) if calibration else None
    skipped = fit.skipped + (cal.skipped if cal else [])
    warn_no_face(fit.no_face + (cal.no_face if cal else []), len(paths) + len(calibration))
    if not fit.paths:
        raise ValueError(f"{args.real}: none of the {len(paths)} fit images could be read")
    if cal is not None and not cal.paths:
        raise ValueError(f"--calibration: none of the {len(calibration)} calibration images could be read")
    det = OneClassDetector(
        n_components=args.components,
        covariance_type=args.covariance,
        false_alarm_rate=args.false_alarm_rate,
        seed=args.seed,
        max_iter=args.max_iter,
        reg_covar=args.reg_covar,
        normalize=args.normalize,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        det.fit(fit.features, cal.features if cal is not None else None)
    for w in caught:
        if issubclass(w.category, FitWarning):
            print(f"bfdkern fit-oneclass: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    det.report["skipped"] = skipped_record(skipped)
    hashes = fit.digests + (cal.digests if cal is not None else [])
    path = save_detector(args.output, det, encoder=encoder.identity, preprocessing=prep, fit_hashes=hashes)
    r = det.report
    print(
        f"one-class detector: {args.components}-component {args.covariance}-covariance mixture on {r['n_real']} "
        f"real images ({r['feature_dim']}-d features{'' if args.normalize else ', not normalised'}); EM {'converged' if r['converged'] else 'did NOT converge'} "
        f"after {r['n_iter']} iterations"
    )
    where = f"{r['n_calibration']} held-out calibration reals" if cal is not None else "the fit set (in-sample)"
    print(
        f"threshold {det.threshold:.6g} (log-likelihood) at {100 * args.false_alarm_rate:.1f}% false alarms on "
        f"{where}; {100 * r['train_false_alarm']:.1f}% of the fit set falls below it"
    )
    plot = plot_fit_scores(
        det.fit_scores,
        det.calibration_scores,
        det.threshold,
        Path(path).with_suffix(".scores.png"),
        rate=args.false_alarm_rate,
        title=f"one-class fit: {Path(path).name}",
    )
    print(f"wrote {path} and {plot}")
    return skipped_status("fit-oneclass", skipped, len(paths) + len(calibration), args.strict)
