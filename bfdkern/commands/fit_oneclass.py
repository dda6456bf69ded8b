"""`bfdkern fit-oneclass --encoder RUN --real DIR -o FILE`: fit the one-class (Gaussian mixture) detector
on the frozen encoder's features of real face images."""

from __future__ import annotations

import sys

HELP = "fit the one-class detector: a Gaussian mixture on real faces' features (score = log-likelihood)"


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    from bfdkern.commands.options import add_feature_arguments, add_fit_arguments, add_preprocessing_arguments
    from bfdkern.detect.choices import COVARIANCE_TYPES

    add_fit_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="detector file to write (.npz)")
    g = parser.add_argument_group("mixture")
    g.add_argument("--components", type=int, default=10, help="mixture components (default 10)")
    g.add_argument("--covariance", choices=COVARIANCE_TYPES, default="full", help="covariance type (default full)")
    g.add_argument(
        "--false-alarm-rate",
        type=float,
        default=0.05,
        help="fraction of the training reals below the threshold (default 0.05)",
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


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    from bfdkern.commands.options import run_command

    return run_command("fit-oneclass", lambda: _fit(args), device=args.device)


def _fit(args) -> int:
    from bfdkern.commands.options import feature_kwargs, load_fit_encoder, preprocessing_from_args
    from bfdkern.detect import OneClassDetector, list_images, save_detector
    from bfdkern.models import BladesModel

    paths = list_images(args.real)
    encoder = load_fit_encoder(args)
    if not args.normalize and isinstance(encoder.module, BladesModel):
        # A BLADES run's features are already unit vectors: not normalising them again changes nothing.
        print(
            f"bfdkern fit-oneclass: note: {args.encoder} gives L2-normalised features, so --no-normalize changes "
            f"nothing; for the un-normalised embedding (Zou25) use --encoder embedding:{args.encoder}",
            file=sys.stderr,
        )
    prep = preprocessing_from_args(args, encoder.identity["config"])
    feats = encoder.features(paths, prep, **feature_kwargs(args))
    det = OneClassDetector(
        n_components=args.components,
        covariance_type=args.covariance,
        false_alarm_rate=args.false_alarm_rate,
        seed=args.seed,
        max_iter=args.max_iter,
        reg_covar=args.reg_covar,
        normalize=args.normalize,
    ).fit(feats)
    path = save_detector(args.output, det, encoder=encoder.identity, preprocessing=prep)
    r = det.report
    print(
        f"one-class detector: {args.components}-component {args.covariance}-covariance mixture on {r['n_real']} "
        f"real images ({r['feature_dim']}-d features{'' if args.normalize else ', not normalised'}); EM {'converged' if r['converged'] else 'did NOT converge'} "
        f"after {r['n_iter']} iterations"
    )
    print(
        f"threshold {det.threshold:.6g} (log-likelihood; {100 * r['train_false_alarm']:.1f}% of the training "
        f"reals fall below it, target {100 * args.false_alarm_rate:.1f}%)"
    )
    print(f"wrote {path}")
    return 0
