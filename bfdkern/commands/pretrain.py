"""`bfdkern pretrain --data DIR|MANIFEST --out RUN_DIR`: BLADES pretraining with bi-level lambda.

The defaults are the paper's (AdamW lr 1e-5, weight decay 1e-3, cosine schedule over 20 epochs, batch 48,
lambda 1 then Adam 3e-4 every step, fd hypergradient, 224 x 224, ResNet-50, 3-level ordinal heads; sources in
docs/defaults.md). ``--config FILE`` reads the options from TOML or YAML. ``--resume`` continues a run
directory exactly (it may lengthen ``--epochs``); Ctrl-C saves a checkpoint and exits. One session at a time
uses a run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bfdkern.commands.options import DEVICE_HELP, add_config_argument, run_command

HELP = "pretrain the encoder on real photos with bi-level task weights (resumable; Ctrl-C saves)"

# Options of this command that map onto PretrainConfig fields (dest -> field).
FIELDS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "lambda_lr": "lambda_lr",
    "image_size": "image_size",
    "backbone": "backbone",
    "feature_dim": "feature_dim",
    "init": "init",
    "mode": "mode",
    "val_fraction": "val_fraction",
    "seed": "seed",
    "dtype": "dtype",
    "device": "device",
    "workers": "workers",
    "max_steps": "max_steps",
    "checkpoint_every": "checkpoint_every",
    "outer_every": "outer_every",
    "lambda_init": "lambda_init",
    "ordinal_levels": "ordinal_levels",
    "precision": "precision",
    "logger": "logger",
    "face_detector": "face_detector",
}
SWITCHES = {"fixed_lambda": True, "face_crop": True, "unpaired": False, "tf32": True, "compile": True}
"""Switches (dest -> the value of their field when given); ``unpaired`` sets ``paired``."""


def add_arguments(parser) -> None:
    """Declare the command's options (plain data only: no torch for ``--help``)."""
    from bfdkern.bilevel.choices import MODES
    from bfdkern.data.choices import FACE_DETECTOR_NAMES
    from bfdkern.models.choices import BACKBONES
    from bfdkern.recipes.presets import PRESETS
    from bfdkern.training.config import DTYPES, LOGGERS, PRECISIONS, PretrainConfig

    d = PretrainConfig()
    add_config_argument(parser)
    parser.add_argument(
        "--data",
        metavar="DIR|MANIFEST",
        help="folder of real photos (recursive) or a manifest from `bfdkern index` (not needed with --resume)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="RUN_DIR",
        help="run directory (created; must not hold a run unless --resume; one session at a time)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in RUN_DIR from its checkpoint (it may lengthen --epochs and --max-steps)",
    )
    # Defaults are None so that a resumed run can tell an option given from one left out.
    g = parser.add_argument_group("training (defaults: the paper's)")
    g.add_argument("--epochs", type=int, default=None, help=f"epochs of the cosine schedule (default {d.epochs})")
    g.add_argument("--batch-size", type=int, default=None, help=f"images per batch (default {d.batch_size})")
    g.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {d.lr:g})")
    g.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay (default {d.weight_decay:g})")
    g.add_argument(
        "--lambda-lr", type=float, default=None, help=f"Adam learning rate of lambda (default {d.lambda_lr:g})"
    )
    g.add_argument(
        "--lambda-init", type=float, default=None, help=f"initial value of every lambda (default {d.lambda_init:g})"
    )
    g.add_argument("--mode", choices=MODES, default=None, help=f"hypergradient (default {d.mode})")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="fraction of the images held out for B_val only (default 0: both streams use all images)",
    )
    g.add_argument(
        "--seed", type=int, default=None, help=f"seed of the model, samples and batch order (default {d.seed})"
    )
    g.add_argument("--dtype", choices=DTYPES, default=None, help=f"parameter precision (default {d.dtype})")
    a = parser.add_argument_group("ablations (see bfdkern.recipes.presets)")
    a.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help=f"a named ablation or baseline: {', '.join(PRESETS)} (other options override it)",
    )
    a.add_argument(
        "--fixed-lambda",
        action="store_true",
        default=None,
        help="keep every lambda at its initial value 1 (no bi-level update)",
    )
    a.add_argument("--outer-every", type=int, default=None, metavar="K", help="update lambda every K steps (default 1)")
    a.add_argument(
        "--tasks", default=None, metavar="A,B", help="train only these tasks (comma-separated; keep manipulated)"
    )
    a.add_argument(
        "--drop-tasks",
        default=None,
        metavar="A,B",
        help="train all tasks but these task names or kinds (ordinal, categorical, multilabel = region)",
    )
    m = parser.add_argument_group("model and images")
    m.add_argument("--image-size", type=int, default=None, help=f"input side in pixels (default {d.image_size})")
    m.add_argument("--backbone", choices=BACKBONES, default=None, help=f"encoder backbone (default {d.backbone})")
    m.add_argument("--feature-dim", type=int, default=None, help=f"embedding size (default {d.feature_dim})")
    m.add_argument(
        "--ordinal-levels",
        type=int,
        default=None,
        metavar="L",
        help=f"columns of each ordinal EXIF head: L levels scored as the expected level of their softmax, or 1 raw "
        f"score as in Zou25 (default {d.ordinal_levels}, as in BLADES)",
    )
    m.add_argument(
        "--init",
        metavar="WHAT",
        default=None,
        help="where the weights start: imagenet (torchvision's, downloaded once into $TORCH_HOME; "
        "imagenet:IMAGENET1K_V2 for V2), random, or a file: a torchvision state dict, an encoder file, a BLADES, "
        "Zou25 or EAL checkpoint (default: imagenet for the ResNets, random for small)",
    )
    m.add_argument(
        "--unpaired",
        action="store_true",
        default=None,
        help="draw every sample independently (default: each batch holds B/2 photos as original and manipulated)",
    )
    m.add_argument(
        "--face-crop",
        action="store_true",
        default=None,
        help="crop detected faces (OpenCV Haar; images without a face are skipped)",
    )
    m.add_argument(
        "--face-detector",
        choices=FACE_DETECTOR_NAMES,
        default=None,
        help="finds faces for --face-crop when the data has no boxes; found once and stored in the manifest "
        "(default auto: mediapipe when installed, else haar)",
    )
    m.add_argument(
        "--boxes",
        metavar="FILE",
        default=None,
        help="face boxes/landmarks for the crops and the mouth and eye manipulations: FDF's fdf_metainfo.json, "
        "or a CSV (path, x0, y0, x1, y1) or JSON (file -> box or landmarks) in pixels",
    )
    x = parser.add_argument_group("execution (may change on --resume)")
    x.add_argument("--device", default=None, help=DEVICE_HELP)
    x.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="fp32, or bf16: forwards under bfloat16 autocast, parameters and the fd perturbation in float32 "
        f"(default {d.precision})",
    )
    x.add_argument(
        "--tf32",
        action="store_true",
        default=None,
        help="allow TF32 tensor cores for float32 matmuls and convolutions (CUDA; default: torch's defaults)",
    )
    x.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the model's forward (not with --mode unroll; the first steps compile)",
    )
    x.add_argument(
        "--logger",
        choices=LOGGERS,
        default=None,
        help="log.csv only, or also TensorBoard (RUN_DIR/tensorboard) or Weights & Biases (optional packages; "
        f"default {d.logger})",
    )
    x.add_argument(
        "--workers", type=int, default=None, help=f"DataLoader workers per batch stream (default {d.workers})"
    )
    x.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many steps in all (the schedule keeps its length; default: run it to its end)",
    )
    x.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help=f"steps between checkpoints, 0 = only at epoch ends (default {d.checkpoint_every})",
    )
    x.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    x.add_argument("--quiet", action="store_true", default=None, help="no progress bars")


def config_from_args(args):
    """The run's :class:`~bfdkern.training.PretrainConfig`: new from the options, or the run directory's with
    the options that were given applied (a resumed run may change only the execution options, and lengthen
    ``--epochs``)."""
    from bfdkern.recipes.presets import get_preset, parse_names, tasks_without
    from bfdkern.training import PretrainConfig

    given = dict(get_preset(args.preset).pretrain) if args.preset else {}
    given.update({field: getattr(args, dest) for dest, field in FIELDS.items() if getattr(args, dest) is not None})
    if args.tasks is not None and args.drop_tasks is not None:
        raise ValueError("--tasks and --drop-tasks exclude each other; give one")
    if args.tasks is not None:
        given["tasks"] = parse_names(args.tasks, "--tasks")
    if args.drop_tasks is not None:
        given["tasks"] = tasks_without(*parse_names(args.drop_tasks, "--drop-tasks"))
    for dest, value in SWITCHES.items():
        if getattr(args, dest):
            given["paired" if dest == "unpaired" else dest] = value
    if args.quiet:
        given["progress"] = False
    if args.data is not None:
        data = Path(args.data)
        if not data.exists():
            raise FileNotFoundError(f"{data}: no such photo folder or manifest (--data)")
        given["data"] = str(data.resolve())
    if args.boxes is not None:
        boxes = Path(args.boxes)
        if not boxes.is_file():
            raise FileNotFoundError(f"{boxes}: no such boxes table (--boxes)")
        given["boxes"] = str(boxes.resolve())
    if args.init is not None:
        from bfdkern.models.choices import is_file_init

        if is_file_init(args.init):
            init = Path(args.init)
            if not init.exists():
                raise FileNotFoundError(f"{init}: no such weights file (--init)")
            given["init"] = str(init.resolve())
    if args.resume:
        return PretrainConfig.load(args.out).resumed_with(given)
    if "data" not in given:
        raise ValueError("--data is required for a new run (a folder of photos or a manifest)")
    config = PretrainConfig(**given)
    from bfdkern.models.weights import ensure_available

    ensure_available(config.init, config.backbone)  # a missing start fails before the run folder is written
    return config


def run(args) -> int:
    return run_command("pretrain", lambda: _pretrain(args), device=args.device)


def _pretrain(args) -> int:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    config = config_from_args(args)  # every check that needs no data, before torch is imported (~2 s)
    import torch

    from bfdkern.bilevel.distributed import is_main_process
    from bfdkern.training import format_losses, pretrain

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    try:
        result = pretrain(config, args.out, resume=bool(args.resume))
    except KeyboardInterrupt:  # before training started (e.g. while the images were checked)
        print("bfdkern pretrain: interrupted before the first step; nothing to save", file=sys.stderr)
        return 130
    except FloatingPointError as exc:
        print(f"bfdkern pretrain: error: {exc}", file=sys.stderr)
        return 1
    spec = config.task_spec()
    if result.status == "aborted":
        return 130
    if not is_main_process():  # under torchrun, rank 0 reports
        return 130 if result.status == "interrupted" else 0
    if result.first_losses:
        print(f"per-task loss, mean of the first and the last {result.window} logged steps (training batches):")
        print(format_losses(result, spec))
    if result.session_steps:
        print(
            f"{result.session_steps} steps this session; median step {1000 * result.step_seconds:.0f} ms, median "
            f"wait for data {1000 * result.data_seconds:.0f} ms"
        )
    for name, path in result.plots.items():
        print(f"plot ({name}): {path}")
    if result.status == "interrupted":
        return 130
    print(f"step {result.steps} of {result.total_steps}; encoder written to {result.encoder}")
    return 0
