"""EXIF pretext labels from real photographs: read the nine tags (pyexiv2 or Pillow), parse them
exactly, map them onto the task spec's vocabularies, and index whole collections into a SQLite
manifest. See docs/exif.md.

The names below load on first use: :mod:`bfdkern.tasks` reads the leaf module
:mod:`bfdkern.exif.vocab`, and importing it must not pull in the readers and the manifest
(which import the task spec back) or pyexiv2."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "labels": ("TASKS", "QuantileBins", "label_of", "labels_of", "targets"),
    "manifest": ("FILE_REASONS", "IndexReport", "build_manifest", "fit_bins", "read_labels"),
    "parse": ("REASONS", "TagValue", "parse_tags"),
    "reader": ("BACKENDS", "ExifReadError", "RawExif", "get_backend", "read_exif", "read_raw"),
    "vocab": ("canonical_make", "class_of_code"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'bfdkern.exif' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bfdkern.exif.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
