"""`bfdkern import-weights FILE --format blades|zou25|eal -o ENCODER.pt [--detector BC.npz]`: the authors'
released checkpoints as a bfdkern encoder file (and BLADES's BC MLP as a binary detector file).

The encoder file holds the image encoder (ResNet-50 and its fc 2048 -> 768, the embedding) with CLIP's input
statistics and 224-pixel inputs; it works wherever an encoder does: ``fit-oneclass``, ``fit-binary``,
``detect``, ``evaluate`` and ``pretrain --init``. Everything else in the checkpoint (CLIP's or DistilBERT's text
tower, text_fc, Zou25's task heads, EAL's temperature) is left out, and the report says what.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from bfdkern.commands.options import run_command

HELP = "import the authors' BLADES, Zou25 or EAL checkpoint as a bfdkern encoder (and BLADES's BC MLP as a detector)"

FORMATS = ("blades", "zou25", "eal")


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser`` (no torch import: `--help` stays fast)."""
    parser.add_argument("file", metavar="FILE", help="the checkpoint: BLADES OC.pth / BC.pth, Zou25's, or EAL's")
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="blades (MZMMSEC/AIGFD_BLO CLIP_EXIF_Net or BC_MLP), zou25 (MZMMSEC/AIGFD_EXIF), eal "
        "(hellomuffin/exif-as-language wrapper_75_new.pth)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="ENCODER.pt", help="bfdkern encoder file to write")
    d = parser.add_argument_group("BLADES BC.pth: its MLP as a binary detector")
    d.add_argument("--detector", metavar="FILE.npz", help="also write BC_MLP's fc1/fc2 as a binary detector file")
    d.add_argument(
        "--jpeg-quality",
        type=int,
        default=0,
        help="the detector's preprocessing: re-encode images as JPEG at this quality, 0 = keep the decoded pixels "
        "as the authors' evaluation does (default 0)",
    )
    d.add_argument(
        "--face-crop", action="store_true", help="the detector's preprocessing: crop each image to its largest face"
    )
    d.add_argument("--size", type=int, default=224, help="the detector's input side in pixels (default 224, theirs)")


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    return run_command("import-weights", lambda: _import(args))


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _import(args) -> int:
    from bfdkern.models import import_authors_encoder, save_model

    source = Path(args.file)
    if args.detector and args.format != "blades":
        raise ValueError(f"--detector: only BLADES's BC.pth holds a detector MLP, not a {args.format} checkpoint")
    model, weights = import_authors_encoder(source, args.format, mlp=bool(args.detector))
    imported = {
        "format": weights.format,
        "file": str(source.resolve()),
        "sha256": _file_sha256(source),
        "report": weights.report(),
    }
    path = save_model(args.output, model, extra={"imported": imported})
    for line in weights.report():
        print(line)
    print(
        f"wrote {path}: resnet50 encoder, {model.feature_dim}-d features, CLIP input statistics, "
        f"{model.input_size}-pixel inputs"
    )
    if args.detector:
        print(f"wrote {_write_detector(args, path, weights, imported)}: the BC MLP as a binary detector (P(fake))")
    if args.format == "zou25":
        print(
            f"Zou25's detector is a GMM on the un-normalised embedding: bfdkern fit-oneclass --encoder embedding:{path} "
            "--no-normalize --components 12 --real DIR -o zou25.npz",
            file=sys.stderr,
        )
    elif not args.detector:
        print(f"next: bfdkern fit-oneclass --encoder {path} --real DIR -o oc.npz", file=sys.stderr)
    return 0


def _write_detector(args, encoder_path, weights, imported: dict):
    from bfdkern.detect import BinaryDetector, Preprocessing, save_detector
    from bfdkern.detect.encoder import load_encoder

    arrays = {f"mlp.{k}": v.detach().cpu().numpy() for k, v in weights.mlp.items()}
    hidden = int(arrays["mlp.0.weight"].shape[0])
    meta = {
        "params": {"hidden": hidden},
        "report": {"imported_from": imported["file"], "format": imported["format"], "sha256": imported["sha256"]},
    }
    detector = BinaryDetector.from_state(meta, arrays)
    prep = Preprocessing(jpeg_quality=args.jpeg_quality or None, face_crop=args.face_crop, size=args.size)
    encoder = load_encoder(encoder_path)
    return save_detector(args.detector, detector, encoder=encoder.identity, preprocessing=prep)
