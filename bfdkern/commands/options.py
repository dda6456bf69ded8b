"""Command-line options shared by the commands: the detection commands' (fit-oneclass, fit-binary, detect,
evaluate) encoder, feature and preprocessing options; ``--device`` and ``--config FILE``, and how every
command reports a bad input.

Declaring options imports nothing heavy (no torch, no NumPy), so ``bfdkern COMMAND --help`` is fast: the
choices come from the packages' plain-data ``choices`` modules, and whatever a command needs to run is
imported when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bfdkern.detect.preprocess import Preprocessing

DEVICE_HELP = "cpu, cuda, cuda:1, ... (default: cuda when available)"
"""The help of every command's --device (checked by :func:`run_command`)."""
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
    g.add_argument("--device", default=None, help=DEVICE_HELP)
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
    from bfdkern.detect.preprocess import Preprocessing

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


# Device files of a GPU that CUDA (or ROCm, which torch also calls cuda) can use: NVIDIA's driver (always
# /dev/nvidiactl, in containers too), WSL2, ROCm, and NVIDIA Jetson (Tegra).
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu")


def _no_gpu_driver(device: str) -> str | None:
    """Why a ``cuda`` device cannot exist on this Linux machine, told without importing torch: none of the
    device files a GPU driver creates is visible. None when one is, on other systems, and for other devices:
    torch's own check (:mod:`bfdkern.devices`) decides those."""
    if not (device == "cuda" or device.startswith("cuda:")) or not sys.platform.startswith("linux"):
        return None
    if any(os.path.exists(f) for f in GPU_DEVICE_FILES):
        return None
    return f"no GPU device is visible here (none of {', '.join(GPU_DEVICE_FILES)}); use cpu"


def check_device(device: str | None) -> None:
    """Raise ValueError, one line starting ``--device NAME:``, when ``device`` names a device this machine
    does not have (``cuda`` without a GPU, ``cuda:3`` with one GPU) or no device at all."""
    if device is None:
        return
    problem = _no_gpu_driver(device)  # without torch (~2 s to import): a missing GPU fails at once
    if problem is not None:
        raise ValueError(f"--device {device}: {problem}")
    from bfdkern.devices import device_problem

    problem = device_problem(device)
    if problem is not None:
        raise ValueError(f"--device {device}: {problem}")


def run_command(name: str, body: Callable[[], int], *, device: str | None = None) -> int:
    """Check ``device`` (the command's ``--device``), then run ``body``. A bad input (ValueError, OSError) is
    printed as one line ``bfdkern NAME: error: ...`` and gives exit status 2; a closed output pipe (``| head``)
    is left to :func:`bfdkern.cli.main`, which ends quietly."""
    try:
        check_device(device)
        return int(body() or 0)
    except BrokenPipeError:
        raise
    except (ValueError, OSError) as exc:
        print(f"bfdkern {name}: error: {exc}", file=sys.stderr)
        return 2


# --- --config FILE --------------------------------------------------------------------------------------
CONFIG_SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}


def add_config_argument(parser) -> None:
    """``--config FILE``: the command's options from a TOML or YAML file (see :func:`config_defaults`)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or YAML file of this command's options (keys are the option names, e.g. batch-size = 48); "
        "options given on the command line override it",
    )


def read_config_file(path: str | Path) -> dict:
    """The table of a TOML (``.toml``) or YAML (``.yaml``, ``.yml``) file; ValueError naming the file when it
    cannot be read as one."""
    path = Path(path)
    kind = CONFIG_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: a configuration file ends in .toml, .yaml or .yml")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such configuration file (--config)")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if kind == "TOML":
            import tomllib

            data = tomllib.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise ValueError(
                    f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write it as TOML"
                ) from None
            data = yaml.safe_load(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise ValueError(f"{path}: not valid {kind}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError and its kin
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: not valid {kind}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of option = value, got a {type(data).__name__}")
    return data


def _config_value(action: argparse.Action, key: str, value, source: str):
    """``value`` from a configuration file as the parsed value of ``action`` (what the command line would
    give), or ValueError naming ``source`` and ``key``."""
    where = f"{source}: {key}"
    if action.nargs == 0:  # store_true and its kin: a switch
        if not isinstance(value, bool):
            raise ValueError(f"{where} = {value!r}: expected true or false")
        return action.const if value else action.default
    if isinstance(value, list) and action.nargs in (None, "?"):
        value = ",".join(str(v) for v in value)  # a list for a comma-separated option (--tasks)
    if isinstance(value, (dict, list, bool)):
        raise ValueError(f"{where} = {value!r}: expected a {getattr(action.type, '__name__', 'string')}")
    convert = action.type or str
    if convert in (int, float) and isinstance(value, str):
        pass  # "48" is as good as on the command line
    elif convert is int and not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise ValueError(f"{where} = {value!r}: expected an integer")
    try:
        value = convert(value if convert in (int, float) else str(value))
    except (TypeError, ValueError):
        raise ValueError(f"{where} = {value!r}: expected a {getattr(convert, '__name__', 'value')}") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} = {value!r}: expected one of {list(action.choices)}")
    return value


def config_defaults(parser: argparse.ArgumentParser, path: str | Path) -> dict:
    """The options of the configuration file ``path`` as ``parser`` defaults (dest -> parsed value).

    Keys are the long option names with or without dashes (``batch-size`` or ``batch_size``); values are
    checked and converted as on the command line. An unknown key is an error listing the known ones. Options
    that the command line requires (``--out``) may come from the file instead.
    """
    options = {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.dest not in ("help", "config") and not isinstance(a, argparse._VersionAction)
    }
    out = {}
    for key, value in read_config_file(path).items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in options:
            known = ", ".join(sorted(d.replace("_", "-") for d in options))
            raise ValueError(f"{path}: unknown option {key!r} (options: {known})")
        out[dest] = _config_value(options[dest], str(key), value, str(path))
    return out


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """When ``argv`` (the command's arguments) has ``--config FILE`` and ``parser`` declares it, make the file's
    options ``parser``'s defaults, so that parsing ``argv`` next gives the file's values overridden by the
    command line's. Returns the file, or None."""
    if not any(a.dest == "config" for a in parser._actions):
        return None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    path = pre.parse_known_args(argv)[0].config
    if path is None:
        return None
    defaults = config_defaults(parser, path)
    for action in parser._actions:
        if action.dest in defaults:
            action.required = False
    parser.set_defaults(**defaults)
    return path


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
