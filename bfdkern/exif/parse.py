"""Exact parsing of raw EXIF strings into numbers in stated units, with a countable reason for
every value that cannot be used.

The readers (:mod:`bfdkern.exif.reader`) hand over the values as the file stores them, as
strings: rationals ``"n/d"``, integers ``"400"``, several values separated by spaces
(``"100 100"``), text as stored (possibly NUL-padded). Numbers are parsed with
:class:`fractions.Fraction`, so ``"1/60"`` is exactly one sixtieth of a second and ``"2"`` is two
seconds; the only inexact values are the APEX conversions (ApertureValue, ShutterSpeedValue),
which are powers of two by definition, and two maker-note ISO encodings (below).

ISO has fallbacks in the maker notes (:data:`MAKER_ISO_SOURCES`), used only when the standard tag
is absent or unusable; the pyexiv2 reader hands them over under exiv2's names without ``Exif.``
(``"Nikon3.ISOSpeed"``), the Pillow reader does not see them. Their decodings follow the
documented ExifTool conversions; two are powers of two (Canon ShotInfo, Nikon ISOInfo) and so
floats, the others are exact.

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
    "malformed": "the tag is not a number (or not text, for Make), a number longer than 100 characters, "
    "or an enumeration code beyond 32 bits",
    "zero_denominator": "a rational with denominator 0 (n/0)",
    "sentinel": "0xFFFFFFFF (4294967295), a camera's 'no value' marker (or a table's 'Unknown', 'n/a', ...)",
    "non_positive": "zero or negative where the quantity must be positive",
    "out_of_range": "a positive value outside the plausible range (see PLAUSIBLE)",
    "nonstandard_code": "an enumeration code outside the EXIF standard, with no 'others' class to take it",
    "unknown_name": "an enumeration written as a name (in a metadata table) that names no EXIF code",
    "undecodable": "a maker-note ISO value that encodes no ISO number ('Auto', 'n/a', not recorded, "
    "a code outside the documented table, a Nikon 'Hi' mode)",
}
"""Why a tag value is missing: the reason codes stored in the manifest, with their meaning."""

SENTINEL = 0xFFFFFFFF
"""The all-ones 32-bit value that cameras write for 'unknown'."""

CODE_LIMIT = 2**32
"""Enumeration codes (and maker-note integers) are 16- or 32-bit: a larger magnitude is ``malformed``."""

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

MAKER_ISO_SOURCES: dict[str, tuple[str, ...]] = {
    "Nikon3.ISOSpeed": ("Nikon3.ISOSpeed",),
    "NikonIi.ISO": ("NikonIi.ISO",),
    "Nikon1.ISOSpeed": ("Nikon1.ISOSpeed",),
    "CanonCs.ISOSpeed": ("CanonCs.ISOSpeed",),
    "CanonSi.ISOSpeed+AutoISO": ("CanonSi.ISOSpeed", "CanonSi.AutoISO"),
    "Casio2.ISO": ("Casio2.ISO",),
    "Casio2.ISOSpeed": ("Casio2.ISOSpeed",),
    "Casio.ISO": ("Casio.ISO",),
}
"""The ISO fallbacks from maker notes, tried in this order after ``ISOSpeedRatings``: source name
(stored as the value's ``source``) -> the maker-note tags it reads (exiv2 key without ``Exif.``).
A source counts as present when its first tag is. Kodak's ISO is not here: exiv2 does not decode
Kodak maker notes; nor Nikon2's 0x0006 code, which ExifTool does not decode."""

MAKER_TAGS: tuple[str, ...] = tuple(dict.fromkeys(t for tags in MAKER_ISO_SOURCES.values() for t in tags))
"""Every maker-note tag a reader may return besides :data:`EXIF_TAGS` (exiv2 names without ``Exif.``)."""

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

MAX_TOKEN = 100
"""Longest number token (characters) parsed: EXIF stores 32-bit numbers (at most 10 digits a part) and
tables print at most ~20 significant digits; a longer token is ``malformed``. The bound keeps every
value far inside the float range and Python's 4300-digit int-parsing limit."""

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
        raise ParseError("empty", f"{_short(raw)} is empty")
    return text.split(" ", 1)[0]


def _whole(token: str) -> bool:
    return token.isascii() and token.isdigit()


def _short(raw: str) -> str:
    """``raw`` quoted for a message, cut to its first 40 characters."""
    return repr(raw) if len(raw) <= 40 else f"{raw[:40]!r}... ({len(raw)} characters)"


def parse_number(raw: str) -> Fraction:
    """The first value of a raw EXIF number (``"71/10"``, ``"400"``, ``"100 100"``, ``"2.8"``), exactly.

    Raises ParseError with reason ``empty``, ``malformed``, ``zero_denominator`` or ``sentinel``.
    """
    first = _first_value(raw)
    if len(first) > MAX_TOKEN:
        raise ParseError("malformed", f"{_short(raw)} has more than {MAX_TOKEN} characters: not a stored number")
    num, slash, den = first.partition("/")
    if slash:
        if not (_INTEGER.fullmatch(num) and _INTEGER.fullmatch(den)):
            raise ParseError("malformed", f"{_short(raw)} is not a number")
        n, d = int(num), int(den)
        if abs(n) == SENTINEL or abs(d) == SENTINEL:
            raise ParseError("sentinel", f"{_short(raw)} holds the 0xFFFFFFFF 'unknown' marker")
        if d == 0:
            raise ParseError("zero_denominator", f"{_short(raw)} has a zero denominator")
        return Fraction(n, d)
    if _whole(first):
        value = Fraction(int(first))
    elif _DECIMAL.fullmatch(first):
        value = Fraction(first)
    else:
        raise ParseError("malformed", f"{_short(raw)} is not a number")
    if value == SENTINEL:
        raise ParseError("sentinel", f"{_short(raw)} holds the 0xFFFFFFFF 'unknown' marker")
    return value


def parse_code(raw: str) -> int:
    """The first value of a raw EXIF SHORT enumeration (``"5"``) as an int; ParseError otherwise."""
    first = _first_value(raw)
    if _whole(first) and len(first) <= MAX_TOKEN:  # the common case, without a Fraction
        code = int(first)
    else:
        value = parse_number(raw)
        if value.denominator != 1:
            raise ParseError("malformed", f"{_short(raw)} is not an integer code")
        code = int(value)
    if code == SENTINEL:
        raise ParseError("sentinel", f"{_short(raw)} holds the 0xFFFFFFFF 'unknown' marker")
    if not -CODE_LIMIT < code < CODE_LIMIT:
        raise ParseError("malformed", f"{_short(raw)} is not a 16- or 32-bit enumeration code")
    return code


def apex_to_f_number(av: Fraction) -> float:
    """f-number from an APEX aperture value: N = 2^(Av / 2)."""
    return 2.0 ** (float(av) / 2.0)


def apex_to_seconds(tv: Fraction) -> float:
    """Exposure time in seconds from an APEX shutter speed value: t = 2^(-Tv)."""
    return 2.0 ** (-float(tv))


_APEX = {"ApertureValue": apex_to_f_number, "ShutterSpeedValue": apex_to_seconds}


# --------------------------------------------------------------------------------------------
# Maker-note ISO (ExifTool's documented conversions, lib/Image/ExifTool/{Nikon,Canon,Casio}.pm)
# --------------------------------------------------------------------------------------------
def _integers(raw: str, tag: str) -> list[int]:
    """Every value of a raw maker-note integer tag (``"0 200"``); ParseError when one is not an integer."""
    text = clean_text(raw)
    if not text:
        raise ParseError("empty", f"{tag} {_short(raw)} is empty")
    values = []
    for token in text.split(" "):
        if len(token) > MAX_TOKEN or not _INTEGER.fullmatch(token):
            raise ParseError("malformed", f"{tag} {_short(raw)} is not a list of integers")
        value = int(token)
        if abs(value) == SENTINEL:
            raise ParseError("sentinel", f"{tag} {_short(raw)} holds the 0xFFFFFFFF 'unknown' marker")
        if not -CODE_LIMIT < value < CODE_LIMIT:
            raise ParseError("malformed", f"{tag} {_short(raw)} holds a value outside the 32-bit range")
        values.append(value)
    return values


def _int16s(value: int, tag: str, raw: str) -> int:
    """A 16-bit value as signed (exiv2 shows Canon's int16s as unsigned: 65523 is -13)."""
    if not -0x8000 <= value <= 0xFFFF:
        raise ParseError("malformed", f"{tag} {_short(raw)} is not a 16-bit value")
    return value - 0x10000 if value >= 0x8000 else value


def _pow2(exponent: float, tag: str, raw: str) -> float:
    """2^exponent for the logarithmic ISO encodings; an exponent no camera writes is ``out_of_range``
    (rather than a float overflow)."""
    if abs(exponent) > 1000:
        raise ParseError("out_of_range", f"{tag} {_short(raw)} is not a plausible encoded ISO")
    return 2.0**exponent


def nikon_iso(raw: str) -> Fraction:
    """Nikon maker-note ISO (tag 0x0002; exiv2 ``Nikon3.ISOSpeed``, ``Nikon1.ISOSpeed``): two
    values, ``"0 200"`` is ISO 200. A first value 1 marks the 'Hi' ISO modes (H0.3 ... H1.0), whose
    second value is not the ISO: ``undecodable``, as is any other count or first value."""
    values = _integers(raw, "Nikon ISO")
    if len(values) != 2 or values[0] != 0:
        what = "a 'Hi' ISO mode" if len(values) == 2 and values[0] == 1 else "not the documented '0 ISO' pair"
        raise ParseError("undecodable", f"Nikon ISO {_short(raw)} is {what}")
    return Fraction(values[1])


def nikon_ii_iso(raw: str) -> float:
    """Nikon ISOInfo ISO (exiv2 ``NikonIi.ISO``): ISO = 100 * 2^(raw / 12 - 5)."""
    return 100.0 * _pow2(_integers(raw, "NikonIi.ISO")[0] / 12.0 - 5.0, "NikonIi.ISO", raw)


CANON_CAMERA_ISO: dict[int, int] = {16: 50, 17: 100, 18: 200, 19: 400, 20: 800}
"""Canon CameraSettings ISO codes that name an ISO; 0 (n/a), 14 (Auto High), 15 (Auto) and 0x7FFF
(not recorded) name none. A code with bit 0x4000 set holds the ISO in its low 14 bits."""

_CANON_NO_ISO = {0: "n/a", 14: "Auto High", 15: "Auto", 0x7FFF: "not recorded", 0xFFFF: "all ones, 'not set'"}


def canon_camera_iso(raw: str) -> Fraction:
    """Canon CameraSettings ISO (index 16; exiv2 ``CanonCs.ISOSpeed``): ``0x4000 | ISO``, or a
    code of :data:`CANON_CAMERA_ISO`; anything else is ``undecodable``, 0xFFFF included (ExifTool
    would read 16383 from it; Canon fills unset fields of these arrays with all ones)."""
    code = _integers(raw, "CanonCs.ISOSpeed")[0]
    if 0 <= code <= 0xFFFF and code not in _CANON_NO_ISO and code & 0x4000:
        return Fraction(code & 0x3FFF)
    if code in CANON_CAMERA_ISO:
        return Fraction(CANON_CAMERA_ISO[code])
    meaning = _CANON_NO_ISO.get(code, "not a documented code")
    raise ParseError("undecodable", f"CanonCs.ISOSpeed {_short(raw)} names no ISO ({meaning})")


def canon_shot_iso(base_raw: str, auto_raw: str | None) -> float:
    """Canon ShotInfo ISO (exiv2 ``CanonSi.ISOSpeed`` = BaseISO, index 2, and ``CanonSi.AutoISO``,
    index 1; both int16s): BaseISO = 100/32 * 2^(b/32), AutoISO = 100 * 2^(a/32) percent, ISO =
    BaseISO * AutoISO / 100 = 3.125 * 2^((b + a) / 32). b = 0 means not recorded; without AutoISO
    the ISO is unknown: both ``undecodable``."""
    base = _int16s(_integers(base_raw, "CanonSi.ISOSpeed")[0], "CanonSi.ISOSpeed", base_raw)
    if base == 0:
        raise ParseError("undecodable", f"CanonSi.ISOSpeed {_short(base_raw)}: 0 means not recorded")
    if auto_raw is None:
        raise ParseError("undecodable", "CanonSi.ISOSpeed without CanonSi.AutoISO gives no ISO")
    auto = _int16s(_integers(auto_raw, "CanonSi.AutoISO")[0], "CanonSi.AutoISO", auto_raw)
    return 3.125 * _pow2((base + auto) / 32.0, "CanonSi.ISOSpeed+AutoISO", f"{base_raw} {auto_raw}")


CASIO2_ISO_CODES: dict[int, int] = {3: 50, 4: 64, 6: 100, 9: 200}
"""Casio type-2 maker-note ISO codes (tag 0x0014, exiv2 ``Casio2.ISOSpeed``)."""


def casio2_iso_code(raw: str) -> Fraction:
    """Casio type-2 coded ISO (exiv2 ``Casio2.ISOSpeed``) by :data:`CASIO2_ISO_CODES`; another
    code is ``undecodable``."""
    code = _integers(raw, "Casio2.ISOSpeed")[0]
    if code not in CASIO2_ISO_CODES:
        raise ParseError("undecodable", f"Casio2.ISOSpeed {_short(raw)} is not a documented ISO code")
    return Fraction(CASIO2_ISO_CODES[code])


_MAKER_DECODERS = {
    "Nikon3.ISOSpeed": nikon_iso,
    "NikonIi.ISO": nikon_ii_iso,
    "Nikon1.ISOSpeed": nikon_iso,
    "CanonCs.ISOSpeed": canon_camera_iso,
    "CanonSi.ISOSpeed+AutoISO": canon_shot_iso,
    "Casio2.ISO": parse_number,  # tag 0x3014: the ISO itself
    "Casio2.ISOSpeed": casio2_iso_code,
    "Casio.ISO": parse_number,  # type-1 tag 0x0014: the ISO itself
}


def _ordinal_from(task: str, tag: str, raw: str, text: bool = False, apex_converted: bool = False) -> Fraction | float:
    value = parse_number(text_number(raw) if text else raw)
    approx = float(value)  # the checks compare floats: Fraction-to-float comparisons are slow
    if tag in _APEX and not apex_converted:
        # APEX values may be negative (f/0.7, 4 s): only the converted value is range-checked.
        if abs(approx) > 1000:
            raise ParseError("out_of_range", f"{tag} {_short(raw)} is not a plausible APEX value")
        value = approx = _APEX[tag](value)
    return _checked(task, tag, raw, value, approx)


def _checked(task: str, tag: str, raw: str, value: Fraction | float, approx: float) -> Fraction | float:
    low, high = PLAUSIBLE[task]
    if approx <= 0 and value <= 0:  # exact: a positive value may round to 0.0 (then out of range below)
        raise ParseError("non_positive", f"{tag} {_short(raw)} must be positive")
    if not low <= approx <= high:
        raise ParseError("out_of_range", f"{tag} {_short(raw)} is outside the plausible range [{low:g}, {high:g}]")
    return value


def parse_ordinal(task: str, raw_tags: Mapping[str, str], text: bool = False, apex_converted: bool = False) -> TagValue:
    """One ordinal task (``aperture``, ``exposure_time``, ``focal_length``, ``iso``) from the raw tags.

    The first source tag that gives a usable value wins (for ``iso``, the maker-note sources of
    :data:`MAKER_ISO_SOURCES` follow the standard tag); when none does, the reason is the first
    present tag's reason (``absent`` when none is present). ``text``: the values are written as people
    and tools print them (``"F2.8"``, ``"1/60 sec"``, ``"50.0 mm"``; see :func:`text_number`);
    ``apex_converted``: ApertureValue and ShutterSpeedValue already hold the f-number and the seconds
    (ExifTool's and Flickr's ApertureValue, ShutterSpeedValue).
    """
    first: TagValue | None = None
    for tag in ORDINAL_SOURCES[task]:
        raw = raw_tags.get(tag)
        if raw is None:
            continue
        try:
            return TagValue(_ordinal_from(task, tag, raw, text, apex_converted), None, raw, tag)
        except ParseError as exc:
            first = first or TagValue(None, exc.reason, raw, tag)
    if task == "iso":
        for source, tags in MAKER_ISO_SOURCES.items():
            raws = [raw_tags.get(t) for t in tags]
            if raws[0] is None:
                continue
            raw = " ".join(r for r in raws if r is not None)
            try:
                value = _MAKER_DECODERS[source](*raws)
                return TagValue(_checked(task, source, raw, value, float(value)), None, raw, source)
            except ParseError as exc:
                first = first or TagValue(None, exc.reason, raw, source)
    return first or TagValue(None, "absent")


def parse_categorical(task: str, raw_tags: Mapping[str, str], text: bool = False) -> TagValue:
    """One categorical task from the raw tags: ``make`` as cleaned text, the others as int codes (with
    ``text``, also by name: ``"Center-weighted average"``, see :data:`CODE_NAMES`)."""
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
        return TagValue(text_code(task, raw) if text else parse_code(raw), None, raw, tag)
    except ParseError as exc:
        return TagValue(None, exc.reason, raw, tag)


def parse_tags(raw_tags: Mapping[str, str], text: bool = False, apex_converted: bool = False) -> dict[str, TagValue]:
    """All nine tasks from the raw tags of one file (EXIF tag name -> raw string), keyed by task name.
    ``text`` and ``apex_converted``: values from a metadata table (see :func:`parse_ordinal`)."""
    out = {task: parse_ordinal(task, raw_tags, text, apex_converted) for task in ORDINAL_SOURCES}
    out.update({task: parse_categorical(task, raw_tags, text) for task in CATEGORICAL_SOURCES})
    return out


# --------------------------------------------------------------------------------------------
# Values as tables print them (ExifTool without -n, Flickr / YFCC100M, exif-as-language, CSV)
# --------------------------------------------------------------------------------------------
NO_VALUE_WORDS = frozenset({"unknown", "none", "null", "n/a", "na", "nan", "undefined", "inf", "-inf", "-"})
"""Words tables write for a value they do not have (compared case-folded): reason ``sentinel``."""

_TEXT_NUMBER = re.compile(
    r"(?:f\s*/?\s*|ƒ\s*/?\s*|iso\s*)?"  # f-number and ISO prefixes: "F2.8", "f/2.8", "ISO 400"
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:\s*/\s*[0-9]+)?)"  # the number: 2.8, 1/60, 10/1250
    r"\s*(?:s|sec|secs|second|seconds|mm|\")?"  # a unit: "1/60 sec", "2 s", "50.0 mm", 2"
    r"(?:\s*\(.*\))?",  # a remark: "5.4 mm (35 mm equivalent: 28.0 mm)"
    re.IGNORECASE,
)


def text_number(text: str) -> str:
    """A number as tables print it -> the parser's notation: ``"F2.8"``, ``"f/2.8"`` -> ``"2.8"``;
    ``"1/60 sec"`` -> ``"1/60"``; ``"2 sec"``, ``"50.0 mm"``, ``"ISO 400"``, ``"100, 100"`` (the first value).
    Raises ParseError ``empty``, ``sentinel`` (a :data:`NO_VALUE_WORDS` word) or ``malformed``."""
    cleaned = clean_text(text).split(",", 1)[0].strip()
    if not cleaned:
        raise ParseError("empty", f"{_short(text)} is empty")
    if cleaned.casefold() in NO_VALUE_WORDS:
        raise ParseError("sentinel", f"{_short(text)} says the value is unknown")
    if len(cleaned) > MAX_TOKEN:
        raise ParseError("malformed", f"{_short(text)} has more than {MAX_TOKEN} characters: not a number")
    match = _TEXT_NUMBER.fullmatch(cleaned)
    if match is None:
        raise ParseError("malformed", f"{_short(text)} is not a number")
    return match.group(1).replace(" ", "")


def _name_key(name: str) -> str:
    return "".join(c for c in clean_text(name).casefold() if c.isalnum())


CODE_NAMES: dict[str, dict[str, int]] = {
    "metering_mode": {
        **dict.fromkeys(("unknown",), 0),
        **dict.fromkeys(("average",), 1),
        **dict.fromkeys(("centerweightedaverage", "centreweightedaverage", "centerweighted", "centreweighted"), 2),
        **dict.fromkeys(("spot",), 3),
        **dict.fromkeys(("multispot",), 4),
        **dict.fromkeys(("multisegment", "pattern", "evaluative", "matrix", "esp"), 5),
        **dict.fromkeys(("partial",), 6),
        **dict.fromkeys(("other",), 255),
    },
    "exposure_mode": {
        **dict.fromkeys(("auto", "autoexposure"), 0),
        **dict.fromkeys(("manual", "manualexposure"), 1),
        **dict.fromkeys(("autobracket", "autobracketing"), 2),
    },
    "white_balance": {
        **dict.fromkeys(("auto", "autowhitebalance"), 0),
        **dict.fromkeys(("manual", "manualwhitebalance"), 1),
    },
    "exposure_program": {
        **dict.fromkeys(("notdefined", "undefined"), 0),
        **dict.fromkeys(("manual", "manualcontrol"), 1),
        **dict.fromkeys(("programae", "normalprogram", "programnormal", "normal", "program", "auto"), 2),
        **dict.fromkeys(("aperturepriorityae", "aperturepriority"), 3),
        **dict.fromkeys(("shutterspeedpriorityae", "shutterpriority", "shutterspeedpriority"), 4),
        **dict.fromkeys(("creativeslowspeed", "creativeprogram", "programcreativeslowprogram", "creative"), 5),
        **dict.fromkeys(("actionhighspeed", "actionprogram", "programactionhighspeedprogram", "action"), 6),
        **dict.fromkeys(("portrait", "portraitmode"), 7),
        **dict.fromkeys(("landscape", "landscapemode"), 8),
        **dict.fromkeys(("bulb",), 9),
    },
}
"""Enumeration names as ExifTool, exiv2, metadata-extractor (Flickr, YFCC100M) and the EXIF standard
print them, case, spaces and punctuation ignored -> the EXIF code (``"Center-weighted average"``,
``"Center weighted average"`` -> 2; ``"Multi-segment"``, ``"Pattern"``, ``"Evaluative"`` -> 5)."""


_UNDEFINED_CODE = re.compile(r"unknown\s*\(\s*([+-]?[0-9]{1,12})\s*\)", re.IGNORECASE)


def text_code(task: str, text: str) -> int:
    """An enumeration as a table prints it: a number (``"5"``) or a name of :data:`CODE_NAMES`.
    Raises ParseError ``empty``, ``sentinel``, ``malformed`` or ``unknown_name``."""
    cleaned = clean_text(text)
    if not cleaned:
        raise ParseError("empty", f"{_short(text)} is empty")
    if cleaned[0].isdigit() or cleaned[0] in "+-":
        return parse_code(cleaned)
    undefined = _UNDEFINED_CODE.fullmatch(cleaned)
    if undefined is not None:  # ExifTool prints a code it has no name for as "Unknown (7)"
        return parse_code(undefined.group(1))
    key = _name_key(cleaned)
    code = CODE_NAMES[task].get(key)
    if code is None:
        if cleaned.casefold() in NO_VALUE_WORDS:
            raise ParseError("sentinel", f"{_short(text)} says the value is unknown")
        raise ParseError("unknown_name", f"{_short(text)} names no {task} code")
    return code
