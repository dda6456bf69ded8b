"""`bfdkern detect IMAGES... --detector FILE [--json]`: score images with a fitted detector."""

from __future__ import annotations

HELP = "score images with a fitted detector: per image the score, the label (real/fake) and the threshold"


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    from bfdkern.commands.options import add_feature_arguments

    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (searched recursively)")
    parser.add_argument("--detector", required=True, metavar="FILE", help="detector file from fit-oneclass/fit-binary")
    parser.add_argument(
        "--encoder", metavar="RUN", help="encoder run or checkpoint (default: the one recorded in the detector file)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    add_feature_arguments(parser)


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    from bfdkern.commands.options import run_command

    return run_command("detect", lambda: _detect(args), device=args.device)


def _expand(items) -> list:
    from pathlib import Path

    from bfdkern.detect import list_images

    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += list_images(p)
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    return paths


def _detect(args) -> int:
    import json

    from bfdkern.commands.options import feature_kwargs
    from bfdkern.detect.encoder import load_detector_with_any_encoder

    paths = _expand(args.images)
    det, _, encoder = load_detector_with_any_encoder(args.detector, args.encoder)
    feats = encoder.features(paths, det.preprocessing, **feature_kwargs(args))
    scores = det.score(feats)
    labels = ["fake" if d else "real" for d in det.decide(scores)]
    if args.json:
        for p, s, lab in zip(paths, scores, labels):
            print(
                json.dumps(
                    {
                        "path": str(p),
                        "score": float(s),
                        "label": lab,
                        "threshold": float(det.threshold),
                        "score_name": det.score_name,
                        "detector": det.kind,
                    }
                )
            )
        return 0
    width = max(len("image"), *(len(str(p)) for p in paths))
    print(f"{det.kind} detector; score = {det.score_name}; threshold = {det.threshold:.6g}")
    print(f"{'image':<{width}}  {'score':>14}  label")
    for p, s, lab in zip(paths, scores, labels):
        print(f"{str(p):<{width}}  {s:>14.6g}  {lab}")
    return 0
