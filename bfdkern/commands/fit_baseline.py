"""`bfdkern fit-baseline {cnnd,gramnet} --real DIR --fake DIR -o FILE.pt`: train a supervised competing
detector (CNND or GramNet) on real vs generated images (unreadable ones skipped with their reasons);
`bfdkern evaluate --detector FILE.pt` scores it."""

from __future__ import annotations

from pathlib import Path

from bfdkern.commands.options import DEVICE_HELP, add_strict_argument, run_command, skipped_status

HELP = "train a supervised baseline detector (CNND or GramNet) on real and generated images (score = P(fake))"

BASELINES = ("cnnd", "gramnet")


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    from bfdkern.detect.choices import ARCHES

    parser.add_argument("baseline", choices=BASELINES, help="cnnd: blur + JPEG augmented ResNet; gramnet: Gram blocks")
    parser.add_argument("--real", required=True, metavar="DIR", help="folder of real images (searched recursively)")
    parser.add_argument("--fake", required=True, metavar="DIR", help="folder of generated images (recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="detector file to write (.pt)")
    g = parser.add_argument_group("training")
    g.add_argument("--arch", choices=ARCHES, default="resnet50", help="trunk (default resnet50, as the originals)")
    g.add_argument(
        "--backbone-weights",
        metavar="FILE",
        default=None,
        help="torchvision state dict to start the trunk from (the originals start from ImageNet; nothing is "
        "downloaded; default: random initialisation)",
    )
    g.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    g.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    g.add_argument("--batch-size", type=int, default=32, help="images a step (default 32)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    g.add_argument("--seed", type=int, default=0, help="initialisation, augmentation and order seed (default 0)")
    g.add_argument("--device", default=None, help=DEVICE_HELP)
    g.add_argument("--workers", type=int, default=2, help="threads decoding and augmenting images (default 2)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_strict_argument(parser)


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    return run_command("fit-baseline", lambda: _fit(args), device=args.device)


def _fit(args) -> int:
    from bfdkern.detect import list_images
    from bfdkern.detect.baselines import CNNDetector, GramNetDetector
    from bfdkern.detect.features import readable_images

    if args.backbone_weights is not None and not Path(args.backbone_weights).is_file():
        raise FileNotFoundError(f"{args.backbone_weights}: no such state dict file (--backbone-weights)")
    if args.size < 16:
        raise ValueError(f"--size must be >= 16, got {args.size}")
    listed = {"real": list_images(args.real), "fake": list_images(args.fake)}
    # Each image is decoded once before training, so that one unreadable file cannot stop a run mid-epoch.
    real, skipped_real = readable_images(listed["real"], args.workers, not args.quiet)
    fake, skipped_fake = readable_images(listed["fake"], args.workers, not args.quiet)
    for name, kept, folder in (("real", real, args.real), ("fake", fake, args.fake)):
        if not kept:
            raise ValueError(f"{folder}: none of the {name} images could be read")
    cls = CNNDetector if args.baseline == "cnnd" else GramNetDetector
    det = cls(arch=args.arch, size=args.size, backbone_weights=args.backbone_weights, seed=args.seed)
    det.fit(
        real,
        fake,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        workers=args.workers,
        progress=not args.quiet,
    )
    path = det.save(args.output)
    print(f"{args.baseline}: {args.arch} trained {args.epochs} epochs on {len(real)} real and {len(fake)} fake images")
    print(f"wrote {path}; score it with: bfdkern evaluate --detector {path} --real DIR --fake NAME=DIR --out DIR")
    total = len(listed["real"]) + len(listed["fake"])
    return skipped_status("fit-baseline", skipped_real + skipped_fake, total, args.strict)
