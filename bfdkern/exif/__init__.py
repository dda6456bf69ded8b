"""EXIF pretext labels from real photographs: read the nine tags (pyexiv2 or Pillow), parse them
exactly, map them onto the task spec's vocabularies, and index whole collections into a SQLite
manifest. See docs/exif.md."""

from bfdkern.exif.labels import TASKS, QuantileBins, label_of, labels_of, targets
from bfdkern.exif.manifest import FILE_REASONS, IndexReport, build_manifest, fit_bins, read_labels
from bfdkern.exif.parse import REASONS, TagValue, parse_tags
from bfdkern.exif.reader import BACKENDS, ExifReadError, RawExif, get_backend, read_exif, read_raw
from bfdkern.exif.vocab import canonical_make, class_of_code

__all__ = [
    "BACKENDS",
    "FILE_REASONS",
    "REASONS",
    "TASKS",
    "ExifReadError",
    "IndexReport",
    "QuantileBins",
    "RawExif",
    "TagValue",
    "build_manifest",
    "canonical_make",
    "class_of_code",
    "fit_bins",
    "get_backend",
    "label_of",
    "labels_of",
    "parse_tags",
    "read_exif",
    "read_labels",
    "read_raw",
    "targets",
]
