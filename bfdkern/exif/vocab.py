"""Vocabularies of the categorical EXIF tasks: canonical camera makes and the EXIF standard's
enumerations, mapped onto the classes of the task spec (:mod:`bfdkern.tasks`).

The one table (also in docs/exif.md; :func:`vocabulary_table` renders it, a test keeps both in step):

| task | stored value -> class | everything else |
|---|---|---|
| make | Canon* -> Canon; Nikon* -> Nikon; Sony* -> Sony; Apple* -> Apple; Samsung* -> Samsung; Fujifilm*, Fuji* -> Fujifilm; Olympus* -> Olympus; Panasonic* -> Panasonic; Huawei* -> Huawei; but Sony Ericsson* -> others, OM Digital Solutions* -> Olympus (case, NUL padding, punctuation ignored; the first word decides) | any other maker -> others; no letters -> missing (malformed); blank -> missing (empty) |
| metering_mode | 1 average, 2 center_weighted, 3 spot, 4 multi_spot, 5 pattern, 6 partial | 0 (unknown), 255 (other), any other code -> others |
| exposure_mode | 0 auto, 1 manual, 2 auto_bracket | any other code -> missing (nonstandard_code) |
| white_balance | 0 auto, 1 manual | any other code -> missing (nonstandard_code) |
| exposure_program | 1 manual, 2 normal, 3 aperture_priority, 4 shutter_priority, 5 creative, 6 action, 7 portrait, 8 landscape | 0 (not defined), any other code -> others |

The class names and their order below are the classes of :func:`bfdkern.tasks.blades_spec`'s heads; this module
imports nothing from bfdkern, so the task spec can read it.
"""

from __future__ import annotations

import functools

# --- the classes of the BLADES tasks (bfdkern.tasks.blades_spec builds its heads from these) ---
ORDINAL_TAGS = ("iso", "aperture", "exposure_time", "focal_length")
"""Ordinal EXIF tags: ranked pairwise (ISO; f-number; seconds; mm)."""

MAKE_CLASSES = ("Canon", "Nikon", "Sony", "Apple", "Samsung", "Fujifilm", "Olympus", "Panasonic", "Huawei", "others")
"""Canonical camera makes: 9 named makes + others."""

METERING_MODE_CLASSES = ("average", "center_weighted", "spot", "multi_spot", "pattern", "partial", "others")
"""EXIF MeteringMode 1..6 in order, then others (0 unknown, 255 other, non-standard codes)."""

EXPOSURE_MODE_CLASSES = ("auto", "manual", "auto_bracket")
"""EXIF ExposureMode 0..2."""

WHITE_BALANCE_CLASSES = ("auto", "manual")
"""EXIF WhiteBalance 0..1."""

EXPOSURE_PROGRAM_CLASSES = (
    "manual",
    "normal",
    "aperture_priority",
    "shutter_priority",
    "creative",
    "action",
    "portrait",
    "landscape",
    "others",
)
"""EXIF ExposureProgram 1..8 in order, then others (0 not defined, non-standard codes)."""

BLADES_OFFICIAL_CLASSES: dict[str, tuple[str, ...]] = {
    "make": ("Nikon", "Apple", "FUJIFILM", "Canon", "Samsung", "Sony", "Panasonic", "Nokia", "Pentax", "others"),
    "metering_mode": (
        "average",
        "centerweighted",
        "others",
        "partial",
        "spot",
        "multi-spot",
        "multi-segment",
        "evaluative",
    ),
    "exposure_mode": (
        "auto",
        "auto-bracketing",
        "program",
        "manual",
        "aperture-priority",
        "easy-shooting",
        "shutter-priority",
    ),
    "white_balance": ("auto", "manual"),
    "exposure_program": (
        "landscape mode",
        "manual control",
        "normal program",
        "portrait mode",
        "shutter priority",
        "aperture priority",
    ),
}
"""The class lists the official BLADES code's categorical labels (``cls_label`` in its training JSON) index,
in the order of its text prompts (``SSL_training.py``). A manifest imported from that JSON records them, and
a run trained on it builds its heads from them (see :func:`bfdkern.tasks.blades_spec`)."""

CATEGORICAL_TAGS = {
    "make": MAKE_CLASSES,
    "metering_mode": METERING_MODE_CLASSES,
    "exposure_mode": EXPOSURE_MODE_CLASSES,
    "white_balance": WHITE_BALANCE_CLASSES,
    "exposure_program": EXPOSURE_PROGRAM_CLASSES,
}

OTHERS = "others"

MAKE_FIRST_WORDS: dict[str, str] = {
    "canon": "Canon",
    "nikon": "Nikon",
    "sony": "Sony",
    "apple": "Apple",
    "samsung": "Samsung",
    "fujifilm": "Fujifilm",
    "fuji": "Fujifilm",
    "olympus": "Olympus",
    "panasonic": "Panasonic",
    "huawei": "Huawei",
}
"""First word of the maker string (case-folded, punctuation stripped) -> canonical make."""

MAKE_EXCEPTIONS: dict[str, str] = {
    "Sony Ericsson": OTHERS,  # a phone maker of its own, not Sony's camera line
    "OM Digital Solutions": "Olympus",  # Olympus' camera business since 2021
}
"""Leading words (compared case-folded) that override :data:`MAKE_FIRST_WORDS`."""

CODES: dict[str, dict[int, str]] = {
    "metering_mode": {1: "average", 2: "center_weighted", 3: "spot", 4: "multi_spot", 5: "pattern", 6: "partial"},
    "exposure_mode": {0: "auto", 1: "manual", 2: "auto_bracket"},
    "white_balance": {0: "auto", 1: "manual"},
    "exposure_program": {
        1: "manual",
        2: "normal",
        3: "aperture_priority",
        4: "shutter_priority",
        5: "creative",
        6: "action",
        7: "portrait",
        8: "landscape",
    },
}
"""EXIF standard code -> class name, per enumeration task. Codes not listed go to ``others`` where
the task has that class, else they are missing."""

STANDARD_OTHERS: dict[str, dict[int, str]] = {
    "metering_mode": {0: "unknown", 255: "other"},
    "exposure_program": {0: "not defined"},
}
"""Codes the standard defines that carry no class of their own (they go to ``others``)."""


def _words(text: str) -> list[str]:
    cleaned = "".join(c if c.isalnum() else " " for c in text.split("\x00", 1)[0].casefold())
    return cleaned.split()


@functools.lru_cache(maxsize=4096)  # a collection holds few distinct maker strings
def canonical_make(maker: str) -> str:
    """The canonical make of an EXIF Make string (``"NIKON CORPORATION"`` -> ``"Nikon"``,
    ``"samsung"`` -> ``"Samsung"``), ``"others"`` for makers outside the named nine."""
    words = _words(maker)
    if not words:
        return OTHERS
    for lead, make in MAKE_EXCEPTIONS.items():
        lead_words = _words(lead)
        if words[: len(lead_words)] == lead_words:
            return make
    return MAKE_FIRST_WORDS.get(words[0], OTHERS)


def class_of_code(task: str, code: int) -> str | None:
    """The class name of an enumeration code for ``task`` (``metering_mode``, ``exposure_mode``,
    ``white_balance``, ``exposure_program``); ``others`` or None (missing) for codes outside the standard."""
    try:
        table = CODES[task]
    except KeyError:
        raise KeyError(f"no enumeration task named {task!r}; expected one of {sorted(CODES)}") from None
    name = table.get(code)
    if name is not None:
        return name
    return OTHERS if OTHERS in CATEGORICAL_TAGS[task] else None


def vocabulary_table() -> str:
    """The vocabulary table as Markdown (the one docs/exif.md shows)."""
    makes = "; ".join(
        f"{', '.join(w.capitalize() + '*' for w, c in MAKE_FIRST_WORDS.items() if c == cls)} -> {cls}"
        for cls in MAKE_CLASSES
        if cls != OTHERS
    )
    exceptions = ", ".join(f"{k}* -> {v}" for k, v in MAKE_EXCEPTIONS.items())
    rows = [
        "| task | stored value -> class | everything else |",
        "|---|---|---|",
        f"| make | {makes}; but {exceptions} (case, NUL padding, punctuation ignored; the first word decides) "
        "| any other maker -> others; no letters -> missing (malformed); blank -> missing (empty) |",
    ]
    for task, table in CODES.items():
        mapping = ", ".join(f"{code} {name}" for code, name in table.items())
        if OTHERS in CATEGORICAL_TAGS[task]:
            named = "".join(f"{code} ({meaning}), " for code, meaning in STANDARD_OTHERS.get(task, {}).items())
            rest = f"{named}any other code -> others"
        else:
            rest = "any other code -> missing (nonstandard_code)"
        rows.append(f"| {task} | {mapping} | {rest} |")
    return "\n".join(rows)


def _check_against_spec() -> None:
    # The vocabularies must name exactly the spec's classes, so a change in tasks.py cannot drift silently.
    for task, classes in CATEGORICAL_TAGS.items():
        named = (
            set(MAKE_FIRST_WORDS.values()) | set(MAKE_EXCEPTIONS.values())
            if task == "make"
            else set(CODES[task].values())
        )
        extra = named - set(classes)
        if extra:
            raise RuntimeError(f"vocabulary of {task!r} names classes {sorted(extra)} that the task spec lacks")


_check_against_spec()
