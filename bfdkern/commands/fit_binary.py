"""`bfdkern fit-binary --encoder RUN --real DIR --fake DIR -o FILE`: fit the binary (two-layer perceptron)
detector on the frozen encoder's features of real and fake face images."""

from __future__ import annotations

HELP = "fit the binary detector: a two-layer perceptron on real and fake faces' features (score = P(fake))"


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    from bfdkern.commands.options import add_feature_arguments, add_fit_arguments, add_preprocessing_arguments

    add_fit_arguments(parser)
    parser.add_argument(
        "--fake", required=True, metavar="DIR", help="folder of fake face images (searched recursively)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="detector file to write (.npz)")
    g = parser.add_argument_group("perceptron")
    g.add_argument(
        "--max-fakes",
        type=int,
        default=None,
        help="use at most this many fake images, drawn at random with --seed (default: all)",
    )
    g.add_argument("--hidden", type=int, default=1536, help="hidden width (default 1536)")
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    g.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default 1e-2)")
    g.add_argument("--epochs", type=int, default=200, help="epochs at most (default 200)")
    g.add_argument(
        "--patience",
        type=int,
        default=10,
        help="stop after this many epochs without a better validation loss (default 10)",
    )
    g.add_argument("--val-fraction", type=float, default=0.2, help="fraction of each class for validation (0.2)")
    g.add_argument("--seed", type=int, default=0, help="split, initialisation and shuffling seed (default 0)")
    add_preprocessing_arguments(parser)
    add_feature_arguments(parser)


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    from bfdkern.commands.options import run_command

    return run_command("fit-binary", lambda: _fit(args), device=args.device)


def _fit(args) -> int:
    import numpy as np

    from bfdkern.commands.options import feature_kwargs, load_fit_encoder, preprocessing_from_args
    from bfdkern.detect import BinaryDetector, list_images, save_detector

    real_paths, fake_paths = list_images(args.real), list_images(args.fake)
    found = len(fake_paths)
    if args.max_fakes is not None:
        if args.max_fakes < 2:
            raise ValueError(f"--max-fakes must be >= 2, got {args.max_fakes}")
        if found > args.max_fakes:
            keep = np.sort(np.random.default_rng(args.seed).choice(found, args.max_fakes, replace=False))
            fake_paths = [fake_paths[i] for i in keep]
    encoder = load_fit_encoder(args)
    prep = preprocessing_from_args(args, encoder.identity["config"])
    kw = feature_kwargs(args)
    real = encoder.features(real_paths, prep, **kw)
    fake = encoder.features(fake_paths, prep, **kw)
    det = BinaryDetector(
        hidden=args.hidden,
        lr=args.lr,
        weight_decay=args.weight_decay,
        max_epochs=args.epochs,
        patience=args.patience,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    det.fit(real, fake, device=args.device, progress=not args.quiet)
    det.report["n_fake_found"] = found
    path = save_detector(args.output, det, encoder=encoder.identity, preprocessing=prep)
    r = det.report
    print(
        f"binary detector: used {r['n_real_train'] + r['n_real_val']} real and {r['n_fake_train'] + r['n_fake_val']} "
        f"fake images (of {found} found): {r['n_real_train']} real + {r['n_fake_train']} fake to train, "
        f"{r['n_real_val']} real + {r['n_fake_val']} fake to validate"
    )
    print(
        f"stopped after {r['epochs']} epochs; best validation loss {r['best_val_loss']:.4f} at epoch "
        f"{r['best_epoch']} (class-balanced cross-entropy)"
    )
    print(f"wrote {path}")
    return 0
