"""`bfdkern detect FILES_OR_DIRS --detector FILE [--output scores.csv]`: score images with a fitted detector,
a large folder in chunks, each chunk's rows written as soon as it is scored; an unreadable image becomes a row
with its error and is skipped."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from bfdkern.commands.options import (
    EXIT_PARTIAL,
    add_feature_arguments,
    add_strict_argument,
    feature_kwargs,
    run_command,
)

HELP = "score images with a fitted detector: per image the score, the label (real/fake) or why it was skipped"

OUTPUT_FORMATS = (".csv", ".jsonl", ".json")


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    parser.add_argument("images", nargs="+", metavar="FILES_OR_DIRS", help="image files or folders (recursively)")
    parser.add_argument("--detector", required=True, metavar="FILE", help="detector file from fit-oneclass/fit-binary")
    parser.add_argument(
        "--encoder", metavar="RUN", help="encoder run or checkpoint (default: the one recorded in the detector file)"
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write one row per image to FILE as it goes: .csv (path, score, label, error) or .jsonl (JSON lines); "
        "default: print to the terminal",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table (without --output)")
    parser.add_argument(
        "--chunk", type=int, default=1024, metavar="N", help="images scored and written at a time (default 1024)"
    )
    add_feature_arguments(parser)
    add_strict_argument(parser)


def run(args) -> int:
    """Run the command: 0 when every image was scored (or some were skipped, without --strict), 3 when some were
    skipped under --strict, 2 on a bad input or when no image could be read (the message names it)."""
    return run_command("detect", lambda: _detect(args), device=args.device)


def _expand(items) -> list:
    from bfdkern.detect import list_images

    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += list_images(p)
        elif p.exists():
            paths.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    return paths


class _Rows:
    """Where the rows go: a CSV or JSON-lines file, or the terminal (a table or JSON lines); flushed per chunk."""

    def __init__(self, args, det):
        self.det, self.file, self.kind = det, None, "table"
        if args.output:
            suffix = Path(args.output).suffix.lower()
            if suffix not in OUTPUT_FORMATS:
                raise ValueError(f"--output {args.output}: expected a {', '.join(OUTPUT_FORMATS)} file")
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(args.output, "w", newline="")  # noqa: SIM115 (closed in close())
            self.kind = "csv" if suffix == ".csv" else "jsonl"
        elif args.json:
            self.kind = "jsonl"
        self.out = self.file or sys.stdout
        if self.kind == "csv":
            self.writer = csv.writer(self.out)
            self.writer.writerow(["path", "score", "label", "error"])
        elif self.kind == "table":
            print(f"{det.kind} detector; score = {det.score_name}; threshold = {det.threshold:.6g}", file=self.out)
            print(f"{'score':>14}  {'label':<5}  image", file=self.out)

    def write(self, path, score=None, label=None, error=None) -> None:
        if self.kind == "csv":
            self.writer.writerow([str(path), "" if score is None else f"{score:.9g}", label or "", error or ""])
        elif self.kind == "jsonl":
            row = {"path": str(path), "score": score, "label": label, "error": error}
            if error is None:
                row.update(threshold=float(self.det.threshold), score_name=self.det.score_name, detector=self.det.kind)
            self.out.write(json.dumps(row) + "\n")
        elif error is None:
            print(f"{score:>14.6g}  {label:<5}  {path}", file=self.out)
        else:
            print(f"{'-':>14}  {'-':<5}  {path}  (skipped: {error})", file=self.out)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _detect(args) -> int:
    from tqdm.auto import tqdm

    from bfdkern.detect.encoder import load_detector_with_any_encoder
    from bfdkern.detect.features import image_features, resolve_device, skipped_summary
    from bfdkern.detect.preprocess import pipeline_warning

    if args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    paths = _expand(args.images)
    if not paths:
        raise ValueError("no images to score")
    det, header, encoder = load_detector_with_any_encoder(args.detector, args.encoder)
    note = pipeline_warning(header, args.detector)
    if note:
        print(f"bfdkern detect: warning: {note}", file=sys.stderr)
    kw = feature_kwargs(args)
    if hasattr(det, "to"):  # the one-class mixture scores on the features' device, in float64
        det.to(resolve_device(kw["device"]))
    rows = _Rows(args, det)
    scored, skipped = 0, []
    bar = tqdm(total=len(paths), desc="detect", unit="img", disable=args.quiet or rows.file is None, leave=False)
    try:
        for start in range(0, len(paths), args.chunk):
            chunk = paths[start : start + args.chunk]
            got = image_features(
                encoder.module,
                chunk,
                kw["batch_size"],
                kw["device"],
                kw["cache_dir"],
                preprocessing=det.preprocessing,
                num_workers=kw["num_workers"],
                progress=False,
                encoder_id=encoder.fingerprint,
            )
            scores = det.score(got.features) if got.paths else []
            labels = det.decide(scores) if got.paths else []
            done = {int(i): (float(s), "fake" if lab else "real") for i, s, lab in zip(got.index, scores, labels)}
            errors = {str(s.path): s for s in got.skipped}
            for i, path in enumerate(chunk):
                if i in done:
                    rows.write(path, *done[i])
                else:
                    rows.write(path, error=errors[str(path)].why)
            rows.flush()
            scored += len(got.paths)
            skipped += got.skipped
            bar.update(len(chunk))
    finally:
        bar.close()
        rows.close()
    where = f"; wrote {args.output}" if args.output else ""
    state = "partial: " if skipped else ""
    print(f"bfdkern detect: {state}scored {scored} images, skipped {skipped_summary(skipped)}{where}", file=sys.stderr)
    if scored == 0:
        raise ValueError(f"none of the {len(paths)} images could be read, e.g. {skipped[0].message}")
    return EXIT_PARTIAL if skipped and args.strict else 0
