"""`bfdkern ablate --data DIR --fit DIR --real DIR --fake NAME=DIR --out DIR --presets a,b`: pretrain each
named ablation or baseline (:data:`bfdkern.recipes.presets.PRESETS`), fit its one-class detector on the same real
images and evaluate it on the same test sets; one comparison table (CSV, PNG) for all."""

from __future__ import annotations

import sys
from pathlib import Path

from bfdkern.commands.evaluate import parse_fakes
from bfdkern.commands.options import DEVICE_HELP, run_command

HELP = "run ablations/baselines (pretrain + one-class fit + evaluation each) and write one comparison table"

# Options of this command that map onto PretrainConfig fields (dest -> field).
FIELDS = ("epochs", "batch_size", "lr", "lambda_lr", "image_size", "backbone", "feature_dim", "seed", "max_steps")


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    from bfdkern.models.choices import BACKBONES
    from bfdkern.recipes.presets import PRESETS

    parser.add_argument("--data", required=True, metavar="DIR|MANIFEST", help="real photos to pretrain on")
    parser.add_argument("--fit", required=True, metavar="DIR", help="held-out real images to fit the detectors on")
    parser.add_argument("--real", required=True, metavar="DIR", help="real test images")
    parser.add_argument(
        "--fake", required=True, action="append", metavar="NAME=DIR", help="a generator's test images; repeatable"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="one folder a preset, and the comparison table")
    parser.add_argument(
        "--presets",
        default=",".join(PRESETS),
        metavar="A,B",
        help="comma-separated presets: " + ", ".join(f"{p.name} ({p.description})" for p in PRESETS.values()),
    )
    g = parser.add_argument_group("pretraining, the same for every preset (defaults: the paper's)")
    g.add_argument("--epochs", type=int, default=None, help="epochs of the cosine schedule")
    g.add_argument("--batch-size", type=int, default=None, help="images per batch")
    g.add_argument("--lr", type=float, default=None, help="AdamW learning rate")
    g.add_argument("--lambda-lr", type=float, default=None, help="Adam learning rate of lambda")
    g.add_argument("--image-size", type=int, default=None, help="input side in pixels")
    g.add_argument("--backbone", choices=BACKBONES, default=None, help="encoder backbone")
    g.add_argument("--feature-dim", type=int, default=None, help="embedding size")
    g.add_argument("--seed", type=int, default=None, help="seed of the model, samples and mixtures")
    g.add_argument("--max-steps", type=int, default=None, help="stop each pretraining after this many steps")
    x = parser.add_argument_group("execution")
    x.add_argument("--device", default=None, help=DEVICE_HELP)
    x.add_argument("--workers", type=int, default=2, help="data workers (default 2)")
    x.add_argument("--cache-dir", default=None, help="feature cache root (default: no cache)")
    x.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    return run_command("ablate", lambda: _ablate(args), device=args.device)


def _ablate(args) -> int:
    from bfdkern.detect import list_images
    from bfdkern.recipes.ablations import ImageSets, format_comparison, run_preset, write_comparison
    from bfdkern.recipes.presets import get_preset, parse_names

    presets = [get_preset(name) for name in parse_names(args.presets, "--presets")]
    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such photo folder or manifest (--data)")
    sets = ImageSets(
        fit=list_images(args.fit),
        real=list_images(args.real),
        fakes={name: list_images(folder) for name, folder in parse_fakes(args.fake).items()},
    )
    base = {field: getattr(args, field) for field in FIELDS if getattr(args, field) is not None}
    base.update(
        data=str(data.resolve()), device=args.device, workers=args.workers, progress=not args.quiet, checkpoint_every=0
    )
    features = {"device": args.device, "cache_dir": args.cache_dir, "num_workers": args.workers}
    features["progress"] = not args.quiet
    try:
        rows = [run_preset(p, base, sets, args.out, feature_options=features) for p in presets]
    except KeyboardInterrupt:
        print(f"bfdkern ablate: interrupted; run the same command again to continue in {args.out}", file=sys.stderr)
        return 130
    files = write_comparison(rows, args.out)
    print(format_comparison(rows))
    print(f"wrote {files['csv']}, {files['png']}")
    return 0
