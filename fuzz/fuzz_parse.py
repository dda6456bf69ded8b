"""Coverage-guided fuzzing of the EXIF parse path: raw tag strings (as files store them, and as tables
print them) -> values or reasons -> labels -> a manifest row's values.

    pip install atheris
    python fuzz/fuzz_parse.py fuzz/corpus/parse -atheris_runs=500000

An input is lines ``<tag index>:<value>`` (latin-1; the index picks one of :data:`TAGS`, modulo their
count), so every byte string is an input. :func:`check_one` holds the invariants: no exception escapes,
every task has a value or a reason from ``REASONS``, and every value fits a SQLite column (a 64-bit
integer, a finite float, text). The test suite replays ``fuzz/corpus/parse`` through it without atheris.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

TAGS = (
    "FNumber",
    "ApertureValue",
    "ExposureTime",
    "ShutterSpeedValue",
    "FocalLength",
    "ISOSpeedRatings",
    "Make",
    "MeteringMode",
    "ExposureMode",
    "WhiteBalance",
    "ExposureProgram",
    "Nikon3.ISOSpeed",
    "NikonIi.ISO",
    "Nikon1.ISOSpeed",
    "CanonCs.ISOSpeed",
    "CanonSi.ISOSpeed",
    "CanonSi.AutoISO",
    "Casio2.ISO",
    "Casio2.ISOSpeed",
    "Casio.ISO",
)
"""Raw tag names an input can set (the readers' names, maker-note tags included)."""

INT64 = 2**63


def decode(data: bytes) -> dict[str, str]:
    """The raw tags an input stands for: lines ``<tag index>:<value>``, later lines win."""
    raw = {}
    for line in data.split(b"\n"):
        index, colon, value = line.partition(b":")
        if not colon:
            continue
        try:
            tag = TAGS[int(index) % len(TAGS)]
        except ValueError:
            continue
        raw[tag] = value.decode("latin-1")
    return raw


def check_one(data: bytes) -> None:
    """Parse one input as file tags and as table text (with and without converted APEX values); raise
    AssertionError when an invariant breaks (any other exception escaping is a finding too)."""
    from bfdkern.exif.parse import parse_tags

    raw = decode(data)
    for text, apex_converted in ((False, False), (True, False), (True, True)):  # files; tables (text)
        _check_values(parse_tags(raw, text=text, apex_converted=apex_converted))


def _check_values(values) -> None:
    from bfdkern.exif.labels import labels_of
    from bfdkern.exif.parse import ORDINAL_SOURCES, REASONS

    labels, reasons = labels_of(values)
    for task, value in values.items():
        assert (value.value is None) == (value.reason is not None), (task, value)
        assert value.reason is None or value.reason in REASONS, (task, value)
        if value.value is None:
            continue
        if task in ORDINAL_SOURCES:
            assert math.isfinite(float(value.value)) and float(value.value) > 0, (task, value)
        elif isinstance(value.value, int):
            assert -INT64 <= value.value < INT64, (task, value)
        assert labels[task] is not None or reasons[task] is not None, (task, value)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bfdkern, not an installed one
    import atheris
    import numpy  # noqa: F401  (imported first: only bfdkern's own modules are instrumented)
    import torch  # noqa: F401

    with atheris.instrument_imports(include=["bfdkern"]):
        import bfdkern.exif.labels
        import bfdkern.exif.parse
        import bfdkern.exif.vocab  # noqa: F401

    atheris.Setup(sys.argv, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
