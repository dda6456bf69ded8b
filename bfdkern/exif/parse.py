"""Exact parsing of raw EXIF strings into numbers in stated units, with a countable reason for
every value that cannot be used.

The readers (:mod:`bfdkern.exif.reader`) hand over the values as the file stores them, as
strings: rationals ``"n/d"``, integers ``"400"``, several values separated by spaces
(``"100 100"``), text as stored (possibly NUL-padded). Numbers are parsed with
:class:`fractions.Fraction`, so ``"1/60"`` is exactly one sixtieth of a second and ``"2"`` is two
seconds; the only inexact values are the APEX conversions (ApertureValue, ShutterSpeedValue),
which are powers of two by definition.

A value that is not usable becomes missing with one of :data:`REASONS`; it never becomes a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import NamedTuple

REASONS: dict[str, str] = {
    "absent": "the file has no such tag",
    "empty": "the tag holds only blanks or NUL bytes",
    "malformed": "the tag is not a number (or not text, for Make)",
    "zero_denominator": "a rational with denominator 0 (n/0)",
    "sentinel": "0xFFFFFFFF (4294967295), a camera's 'no value' marker",
    "non_positive": "zero or negative where the quantity must be positive",
    "out_of_range": "a positive value outside the plausible range (see PLAUSIBLE)",
    "nonstandard_code": "an enumeration code outside the EXIF standard, with no 'others' class to take it",
}
"""Why a tag value is missing: the reason codes stored in the manifest, with their meaning."""

SENTINEL = 0xFFFFFFFF
"""The all-ones 32-bit value that cameras write for 'unknown'."""

PLAUSIBLE: dict[str, tuple[float, float]] = {
    "aperture": (0.5, 1024.0),  # f-number; f/0.7 is the fastest lens made, pinholes reach f/500
    "exposure_time": (1e-6, 86400.0),  # seconds: electronic shutters to day-long exposures
    "focal_length": (0.5, 20000.0),  # millimetres: phone modules to telescopes
    "iso": (1.0, 10_000_000.0),  # the fastest cameras reach ~4.5 million
}
"""Accepted range [low, high] per ordinal tag, in its unit; outside it a value is 'out_of_range'."""

ORDINAL_SOURCES: dict[str, tuple[str, ...]] = {
    "aperture": ("FNumber", "ApertureValue"),
    "exposure_time": ("ExposureTime", "ShutterSpeedValue"),
    "focal_length": ("FocalLength",),
    "iso": ("ISOSpeedRatings",),
}
"""EXIF tags each ordinal task reads, in order of preference (the later ones are APEX fallbacks)."""

CATEGORICAL_SOURCES: dict[str, str] = {
    "make": "Make",
    "metering_mode": "MeteringMode",
    "exposure_mode": "ExposureMode",
    "white_balance": "WhiteBalance",
    "exposure_program": "ExposureProgram",
}
"""The EXIF tag each categorical task reads."""

EXIF_TAGS: tuple[str, ...] = tuple(t for s in ORDINAL_SOURCES.values() for t in s) + tuple(CATEGORICAL_SOURCES.values())
"""Every EXIF tag the readers must return (standard EXIF names)."""

_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")


class ParseError(ValueError):
    """A raw string that cannot give a usable value; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TagValue(NamedTuple):
    """One task's value read from a file.

    Args:
        value: ordinal tasks: a ``Fraction`` (exact) or ``float`` (APEX conversion) in the task's
            unit; ``make``: the cleaned maker string; other categorical tasks: the ``int`` code.
            ``None`` when missing.
        reason: one of :data:`REASONS` when ``value`` is None, else None.
        raw: the raw string the value came from (or the first tag's raw string when missing).
        source: the EXIF tag that gave ``value`` (``"FNumber"``, ``"ApertureValue"``, ...).
    """

    value: Fraction | float | int | str | None
    reason: str | None = None
    raw: str | None = None
    source: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def clean_text(raw: str) -> str:
    """The text before the first NUL, with whitespace stripped and inner runs collapsed to one space."""
    return " ".join(raw.split("\x00", 1)[0].split())


def _first_value(raw: str) -> str:
    text = clean_text(raw)
    if not text:
        raise ParseError("empty", f"{raw!r} is empty")
    return text.split(" ", 1)[0]


def _whole(token: str) -> bool:
    return token.isascii() and token.isdigit()


def parse_number(raw: str) -> Fraction:
    """The first value of a raw EXIF number (``"71/10"``, ``"400"``, ``"100 100"``, ``"2.8"``), exactly.

    Raises ParseError with reason ``empty``, ``malformed``, ``zero_denominator`` or ``sentinel``.
    """
    first = _first_value(raw)
    num, slash, den = first.partition("/")
    if slash:
        if not (_INTEGER.fullmatch(num) and _INTEGER.fullmatch(den)):
            raise ParseError("malformed", f"{raw!r} is not a number")
        n, d = int(num), int(den)
        if abs(n) == SENTINEL or abs(d) == SENTINEL:
            raise ParseError("sentinel", f"{raw!r} holds the 0xFFFFFFFF 'unknown' marker")
        if d == 0:
            raise ParseError("zero_denominator", f"{raw!r} has a zero denominator")
        return Fraction(n, d)
    if _whole(first):
        value = Fraction(int(first))
    elif _DECIMAL.fullmatch(first):
        value = Fraction(first)
    else:
        raise ParseError("malformed", f"{raw!r} is not a number")
    if value == SENTINEL:
        raise ParseError("sentinel", f"{raw!r} holds the 0xFFFFFFFF 'unknown' marker")
    return value


def parse_code(raw: str) -> int:
    """The first value of a raw EXIF SHORT enumeration (``"5"``) as an int; ParseError otherwise."""
    first = _first_value(raw)
    if _whole(first):  # the common case, without a Fraction
        code = int(first)
        if code == SENTINEL:
            raise ParseError("sentinel", f"{raw!r} holds the 0xFFFFFFFF 'unknown' marker")
        return code
    value = parse_number(raw)
    if value.denominator != 1:
        raise ParseError("malformed", f"{raw!r} is not an integer code")
    return int(value)


def apex_to_f_number(av: Fraction) -> float:
    """f-number from an APEX aperture value: N = 2^(Av / 2)."""
    return 2.0 ** (float(av) / 2.0)


def apex_to_seconds(tv: Fraction) -> float:
    """Exposure time in seconds from an APEX shutter speed value: t = 2^(-Tv)."""
    return 2.0 ** (-float(tv))


_APEX = {"ApertureValue": apex_to_f_number, "ShutterSpeedValue": apex_to_seconds}


def _ordinal_from(task: str, tag: str, raw: str) -> Fraction | float:
    value = parse_number(raw)
    approx = float(value)  # the checks compare floats: Fraction-to-float comparisons are slow
    if tag in _APEX:
        # APEX values may be negative (f/0.7, 4 s): only the converted value is range-checked.
        if abs(approx) > 1000:
            raise ParseError("out_of_range", f"{tag} {raw!r} is not a plausible APEX value")
        value = approx = _APEX[tag](value)
    low, high = PLAUSIBLE[task]
    if approx <= 0:
        raise ParseError("non_positive", f"{tag} {raw!r} must be positive")
    if not low <= approx <= high:
        raise ParseError("out_of_range", f"{tag} {raw!r} is outside the plausible range [{low:g}, {high:g}]")
    return value


def parse_ordinal(task: str, raw_tags: Mapping[str, str]) -> TagValue:
    """One ordinal task (``aperture``, ``exposure_time``, ``focal_length``, ``iso``) from the raw tags.

    The first source tag that gives a usable value wins; when none does, the reason is the
    first present tag's reason (``absent`` when none is present).
    """
    first: TagValue | None = None
    for tag in ORDINAL_SOURCES[task]:
        raw = raw_tags.get(tag)
        if raw is None:
            continue
        try:
            return TagValue(_ordinal_from(task, tag, raw), None, raw, tag)
        except ParseError as exc:
            first = first or TagValue(None, exc.reason, raw, tag)
    return first or TagValue(None, "absent")


def parse_categorical(task: str, raw_tags: Mapping[str, str]) -> TagValue:
    """One categorical task from the raw tags: ``make`` as cleaned text, the others as int codes."""
    tag = CATEGORICAL_SOURCES[task]
    raw = raw_tags.get(tag)
    if raw is None:
        return TagValue(None, "absent")
    if task == "make":
        text = clean_text(raw)
        if not text:
            return TagValue(None, "empty", raw, tag)
        if not any(c.isalpha() for c in text):
            return TagValue(None, "malformed", raw, tag)
        return TagValue(text, None, raw, tag)
    try:
        return TagValue(parse_code(raw), None, raw, tag)
    except ParseError as exc:
        return TagValue(None, exc.reason, raw, tag)


def parse_tags(raw_tags: Mapping[str, str]) -> dict[str, TagValue]:
    """All nine tasks from the raw tags of one file (EXIF tag name -> raw string), keyed by task name."""
    out = {task: parse_ordinal(task, raw_tags) for task in ORDINAL_SOURCES}
    out.update({task: parse_categorical(task, raw_tags) for task in CATEGORICAL_SOURCES})
    return out
