"""Coverage-guided fuzzing of whole files through both EXIF readers (pyexiv2 and Pillow) and the parser.

    pip install atheris
    python fuzz/fuzz_files.py fuzz/corpus/files -atheris_runs=100000

An input is the bytes of one file. :func:`check_one` holds the invariants: each backend either returns
raw tags or raises :class:`~bfdkern.exif.ExifReadError` with a reason from ``READ_REASONS`` naming the
input; the parser then gives every task a value or a reason. Native crashes (exiv2 is C++) end the fuzzer
with the input saved. The test suite replays ``fuzz/corpus/files`` through :func:`check_one`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BACKENDS = []


def check_one(data: bytes) -> None:
    """Read one input with both backends and parse what they return."""
    from bfdkern.exif.parse import parse_tags
    from bfdkern.exif.reader import READ_REASONS, ExifReadError, PillowBackend, Pyexiv2Backend

    if not _BACKENDS:
        _BACKENDS.extend([Pyexiv2Backend(), PillowBackend()])
    for backend in _BACKENDS:
        try:
            raw = backend.read(data, "fuzz-input")
        except ExifReadError as exc:
            assert exc.reason in READ_REASONS and "fuzz-input" in str(exc), exc
            continue
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in raw.tags.items()), raw
        for value in parse_tags(raw.tags).values():
            assert (value.value is None) == (value.reason is not None), value


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bfdkern, not an installed one
    import atheris
    import PIL.Image  # noqa: F401  (Pillow's decoders are fuzzed uninstrumented; bfdkern's code is instrumented)
    import pyexiv2  # noqa: F401

    with atheris.instrument_imports(include=["bfdkern"]):
        import bfdkern.exif.parse
        import bfdkern.exif.reader  # noqa: F401

    atheris.Setup(sys.argv, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
