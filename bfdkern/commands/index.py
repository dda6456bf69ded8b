"""`bfdkern index PHOTOS_DIR -o MANIFEST`: read the EXIF labels of a photo collection into a SQLite
manifest (incremental: a re-run reads only new or changed files); with ``--table``, import them from a
metadata table instead (the official BLADES JSON, EXIF strings per photo, YFCC100M, ExifTool output, CSV)."""

from __future__ import annotations

import os
import signal
import sys

HELP = "index the EXIF pretext labels of a photo folder into a SQLite manifest (incremental, resumable)"


def add_arguments(parser) -> None:
    from bfdkern.data.choices import FACE_DETECTOR_NAMES

    parser.add_argument("photos_dir", metavar="PHOTOS_DIR", help="folder of photos, scanned recursively")
    parser.add_argument("-o", "--output", required=True, metavar="MANIFEST", help="SQLite manifest to create or update")
    parser.add_argument(
        "--workers", type=int, default=min(os.cpu_count() or 1, 8), help="worker processes (default: CPU count, <= 8)"
    )
    parser.add_argument(
        "--backend",
        choices=["pyexiv2", "pillow"],
        default="pyexiv2",
        help="EXIF reader: pyexiv2 (GPLv3, reads RAW/HEIF) or pillow (no GPL code)",
    )
    parser.add_argument("--max-file-mb", type=float, default=512.0, help="larger files are not read (MiB)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one file may take before it is given up")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    f = parser.add_argument_group("face boxes (stored in the manifest; training reads them back, never detects again)")
    f.add_argument(
        "--faces",
        metavar="DETECTOR",
        choices=FACE_DETECTOR_NAMES,
        help="find every photo's face with this detector in the workers (auto: mediapipe when installed, else haar)",
    )
    f.add_argument(
        "--boxes",
        metavar="FILE",
        help="face boxes/landmarks from a table: FDF's fdf_metainfo.json, a CSV (path,x0,y0,x1,y1) or JSON, pixels",
    )
    f.add_argument(
        "--photo-ids",
        metavar="FDF_METAINFO",
        help="link a table keyed by Flickr photo id (YFCC100M, per-photo EXIF JSON) to FDF's images via their photo_url",
    )
    t = parser.add_argument_group("labels from a metadata table instead of the files (see docs/data.md)")
    t.add_argument(
        "--table", metavar="FILE|DIR", help="import the labels from this table (rows name files in PHOTOS_DIR)"
    )
    t.add_argument(
        "--format",
        default="auto",
        choices=["auto", *_formats()],
        help="the table's format (default: detected from its name and content)",
    )
    t.add_argument(
        "--check-files",
        action="store_true",
        help="also read each file's own EXIF and record where it disagrees with the table (the table wins)",
    )
    t.add_argument(
        "--ordinal",
        default="levels",
        choices=["levels", "values"],
        help="official BLADES JSON: its ordinal numbers are quantile levels (default) or values in the tags' units",
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the batches committed so far are kept and a re-run resumes."""


def _terminate(signum, frame) -> None:
    raise Terminated


def run(args) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _index(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _formats() -> list[str]:
    from bfdkern.exif.tables import FORMATS

    return list(FORMATS)


def _index(args) -> int:
    from bfdkern.exif.manifest import build_manifest, import_table

    try:
        if args.table is not None:
            aliases = None
            if args.photo_ids is not None:
                from bfdkern.data.face_index import fdf_photo_ids

                aliases = fdf_photo_ids(args.photo_ids)
            report = import_table(
                args.photos_dir,
                args.output,
                args.table,
                format=args.format,
                ordinal=args.ordinal,
                aliases=aliases,
                check_files=args.check_files,
                workers=args.workers,
                backend=args.backend,
                progress=not args.no_progress,
            )
        else:
            report = build_manifest(
                args.photos_dir,
                args.output,
                workers=args.workers,
                backend=args.backend,
                max_bytes=int(args.max_file_mb * 2**20),
                timeout_s=args.timeout,
                progress=not args.no_progress,
            )
        print(report)
        return _faces(args)
    except (OSError, ValueError, ImportError) as exc:
        print(f"bfdkern index: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"bfdkern index: {what}; what was indexed is kept in {args.output}: run again to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def _faces(args) -> int:
    """The face boxes asked for: a table's, then the detector's for the photos still without one."""
    from bfdkern.data import face_index
    from bfdkern.data.faces import face_detector

    if args.boxes is not None:
        print(face_index.import_boxes(args.output, args.boxes))
    if args.faces is not None:
        locator = face_detector(args.faces)
        print(face_index.find_faces(args.output, locator, workers=args.workers, progress=not args.no_progress))
    return 0
