"""`bfdkern fit-binary --encoder RUN --real DIR --fake DIR -o FILE`: fit the binary (two-layer perceptron)
detector on the frozen encoder's features of real and fake face images."""

from __future__ import annotations

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

HELP = "fit the binary detector: a two-layer perceptron on real and fake faces' features (score = P(fake))"


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
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
    add_strict_argument(parser)


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    return run_command("fit-binary", lambda: _fit(args), device=args.device)


def _fit(args) -> int:
    import numpy as np

    from bfdkern.detect import BinaryDetector, list_images, save_detector
    from bfdkern.detect.features import image_features, skipped_record, warn_no_face
    from bfdkern.detect.plots import plot_validation_curve

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
    kw = {**feature_kwargs(args), "preprocessing": prep, "encoder_id": encoder.fingerprint}
    real = image_features(encoder.module, real_paths, **kw)
    fake = image_features(encoder.module, fake_paths, **kw)
    skipped = real.skipped + fake.skipped
    warn_no_face(real.no_face + fake.no_face, len(real_paths) + len(fake_paths))
    for name, got, folder in (("real", real, args.real), ("fake", fake, args.fake)):
        if len(got.paths) < 2:
            raise ValueError(
                f"{folder}: only {len(got.paths)} {name} images could be read, the binary detector needs 2"
            )
    det = BinaryDetector(
        hidden=args.hidden,
        lr=args.lr,
        weight_decay=args.weight_decay,
        max_epochs=args.epochs,
        patience=args.patience,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    det.fit(real.features, fake.features, device=args.device, progress=not args.quiet)
    det.report["n_fake_found"] = found
    det.report["skipped"] = skipped_record(skipped)
    hashes = real.digests + fake.digests
    path = save_detector(args.output, det, encoder=encoder.identity, preprocessing=prep, fit_hashes=hashes)
    r = det.report
    print(
        f"binary detector: used {r['n_real_train'] + r['n_real_val']} real and {r['n_fake_train'] + r['n_fake_val']} "
        f"fake images (of {found} found): {r['n_real_train']} real + {r['n_fake_train']} fake to train, "
        f"{r['n_real_val']} real + {r['n_fake_val']} fake to validate"
    )
    print(format_curve(r["history"], r["best_epoch"]))
    stop = "stopped early" if r["stopped_early"] else "ran all epochs (raise --epochs?)"
    print(
        f"{stop} after {r['epochs']} epochs; kept epoch {r['best_epoch']}: validation loss {r['best_val_loss']:.4f} "
        "(class-balanced cross-entropy)"
    )
    curve = plot_validation_curve(
        r["history"], r["best_epoch"], Path(path).with_suffix(".curve.png"), title=f"binary fit: {Path(path).name}"
    )
    print(f"wrote {path} and {curve}")
    return skipped_status("fit-binary", skipped, len(real_paths) + len(fake_paths), args.strict)


def format_curve(history: list[dict], best_epoch: int, rows: int = 12) -> str:
    """The validation curve as a short text table: about ``rows`` epochs evenly spread, the kept one marked."""
    import numpy as np

    picks = sorted(set(np.linspace(0, len(history) - 1, min(rows, len(history))).round().astype(int)) | {best_epoch})
    lines = ["epoch  train loss  val loss  val AUC %  val bal. acc %"]
    for i in picks:
        h = history[i]
        train = "-" if h["train_loss"] is None else f"{h['train_loss']:.4f}"
        mark = "  <- kept" if h["epoch"] == best_epoch else ""
        lines.append(
            f"{h['epoch']:>5}  {train:>10}  {h['val_loss']:8.4f}  {100 * h['val_auc']:9.2f}  "
            f"{100 * h['val_balanced_acc']:14.2f}{mark}"
        )
    return "\n".join(lines)
