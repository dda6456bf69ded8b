"""EXIF pretext labels from real photographs: read the nine tags (pyexiv2 or Pillow), parse them
exactly, map them onto the task spec's vocabularies, and index whole collections into a SQLite
manifest. See docs/exif.md.

The names below load on first use: :mod:`bfdkern.tasks` reads the leaf module
:mod:`bfdkern.exif.vocab`, and importing it must not pull in the readers and the manifest
(which import the task spec back) or pyexiv2."""

from __future__ import annotations

from bfdkern.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "labels": ("TASKS", "QuantileBins", "label_of", "labels_of", "targets"),
        "manifest": ("FILE_REASONS", "IndexReport", "build_manifest", "fit_bins", "read_labels"),
        "parse": ("REASONS", "TagValue", "parse_tags"),
        "reader": ("BACKENDS", "ExifReadError", "RawExif", "get_backend", "read_exif", "read_raw"),
        "vocab": ("canonical_make", "class_of_code"),
    },
)
