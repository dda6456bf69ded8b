"""Metadata tables -> one :class:`TableRow` per photo, with the tags as text for the parser.

Photo collections whose files carry no EXIF (Flickr strips it; FDF crops never had it) come with their
labels in a table instead. :func:`read_table` reads these formats (:data:`FORMATS`, auto-detected):

* ``blades-json``: the official BLADES training JSON (``fdf_ccby2_exif_ordinal_categorical.json``): a dict
  keyed by item, each with ``path``, ``EXIF_ordinal`` {``ISO``, ``Aperture``, ``Focal Length``,
  ``Exposure Time``} and ``EXIF_categorical`` {``Make``, ``Metering Mode``, ``Exposure Mode``,
  ``White Balance Mode``, ``Exposure Program``}, each categorical a dict with ``cls_label``. Class labels
  are kept as given, as names of :data:`bfdkern.exif.vocab.BLADES_OFFICIAL_CLASSES`; ordinal numbers are the
  levels the official ranking loss takes (``ordinal="levels"``), or values in the tags' units
  (``ordinal="values"``); ordinal strings go through the parser;
* ``exif-json`` / ``exif-jsonl``: EXIF as strings per photo (exif-as-language, YFCC100M style):
  ``{"EXIF": {"Exposure Time": "1/60 sec", "Aperture Value": "F2.8", ...}}``, as a folder of JSON files
  (one per photo, keyed by file stem), one JSON object keyed by photo, or one JSON object a line;
* ``yfcc``: the YFCC100M EXIF dump, a line per photo: its id, a tab, URL-encoded ``key:value`` pairs joined
  by commas (``Exif+SubIFD.Exposure+Time:1%2F60+sec``);
* ``exiftool-json`` / ``exiftool-csv``: ``exiftool -j`` or ``-csv`` output, with or without ``-n``
  (and ``-G``), keyed by ``SourceFile``;
* ``csv``: a path column (``path``, ``file``, ``filename``, ``image`` or ``SourceFile``) and any of the nine
  tasks' columns, by task name (``aperture``) or EXIF tag name (``FNumber``).

The readers only bring the text into one shape; :func:`bfdkern.exif.parse.parse_tags` (``text=True``)
parses it exactly as it parses a file's tags. A row that cannot be used at all has ``error`` set (its
reason is one of :data:`ROW_REASONS`); valid rows are never lost because of a bad one.
"""

from __future__ import annotations

import csv
import json
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bfdkern.exif.parse import CATEGORICAL_SOURCES, ORDINAL_SOURCES
from bfdkern.exif.vocab import BLADES_OFFICIAL_CLASSES

FORMATS: dict[str, str] = {
    "blades-json": "the official BLADES training JSON (EXIF_ordinal, EXIF_categorical with cls_label)",
    "exif-json": "EXIF as strings per photo: a folder of JSON files, or one JSON object keyed by photo",
    "exif-jsonl": "EXIF as strings per photo, one JSON object a line",
    "yfcc": "the YFCC100M EXIF dump (photo id, tab, URL-encoded key:value pairs)",
    "exiftool-json": "exiftool -j output (with or without -n, -G)",
    "exiftool-csv": "exiftool -csv output (with or without -n, -G)",
    "csv": "a path column and any of the nine tags (task or EXIF names)",
}
"""Table formats :func:`read_table` reads, by the name ``--format`` takes."""

ROW_REASONS: dict[str, str] = {
    "bad_row": "the row cannot be read (malformed JSON or CSV, no path or id, wrong types)",
    "not_utf8": "the row holds bytes that are not UTF-8",
    "missing_file": "no file under the photo folder matches the row's path or id",
    "ambiguous_path": "several files under the photo folder match the row's file name",
    "duplicate": "an earlier row names the same file (the first row is kept)",
}
"""Why a table row gave no manifest row (the ``rejects`` table of the manifest)."""

_TASK_TAGS = {task: sources[0] for task, sources in ORDINAL_SOURCES.items()} | dict(CATEGORICAL_SOURCES)

EXIFTOOL_NAMES: dict[str, str] = {
    "FNumber": "FNumber",
    "ApertureValue": "ApertureValue",
    "ExposureTime": "ExposureTime",
    "ShutterSpeedValue": "ShutterSpeedValue",
    "FocalLength": "FocalLength",
    "ISO": "ISOSpeedRatings",
    "ISOSpeedRatings": "ISOSpeedRatings",
    "PhotographicSensitivity": "ISOSpeedRatings",
    "Make": "Make",
    "MeteringMode": "MeteringMode",
    "ExposureMode": "ExposureMode",
    "WhiteBalance": "WhiteBalance",
    "ExposureProgram": "ExposureProgram",
}
"""ExifTool tag names (group prefix removed) -> the parser's tag names. ExifTool prints ApertureValue and
ShutterSpeedValue already converted from APEX (f-number, seconds)."""

EXTRACTOR_NAMES: dict[str, str] = {
    "F-Number": "FNumber",
    "FNumber": "FNumber",
    "Aperture Value": "ApertureValue",
    "Exposure Time": "ExposureTime",
    "Shutter Speed Value": "ShutterSpeedValue",
    "Focal Length": "FocalLength",
    "ISO Speed Ratings": "ISOSpeedRatings",
    "ISO": "ISOSpeedRatings",
    "Make": "Make",
    "Metering Mode": "MeteringMode",
    "Exposure Mode": "ExposureMode",
    "White Balance Mode": "WhiteBalance",
    "Exposure Program": "ExposureProgram",
}
"""metadata-extractor tag names (Flickr, YFCC100M, exif-as-language) -> the parser's tag names. Its
"White Balance" is the light source (tag 0x9208), not WhiteBalance (0xA403, "White Balance Mode"); its
Aperture Value and Shutter Speed Value are printed converted (``F2.8``, ``1/60 sec``)."""

CSV_NAMES: dict[str, str] = {**_TASK_TAGS, **{t: t for t in _TASK_TAGS.values()}, **EXIFTOOL_NAMES}
"""Plain-CSV column names -> the parser's tag names: the task names, the EXIF tag names, ExifTool's names."""

PATH_COLUMNS = ("path", "file", "filename", "image", "SourceFile")
"""Column names a plain CSV may give the file in."""

BLADES_ORDINAL_KEYS = {
    "ISO": "iso",
    "Aperture": "aperture",
    "Focal Length": "focal_length",
    "Exposure Time": "exposure_time",
}
BLADES_CATEGORICAL_KEYS = {
    "Make": "make",
    "Metering Mode": "metering_mode",
    "Exposure Mode": "exposure_mode",
    "White Balance Mode": "white_balance",
    "Exposure Program": "exposure_program",
}
ORDINAL_MODES = ("levels", "values")
"""How ``blades-json`` ordinal numbers are read: quantile levels as given, or values in the tags' units."""


@dataclass
class TableRow:
    """One row of a table.

    Attributes:
        line: where it is: the line number (text formats) or the item's position (JSON objects), from 1.
        key: the path or id the row names (``None`` when it has none).
        tags: parser tag name (``"FNumber"``, ...) -> the text the table gives.
        given: ``blades-json`` only: task -> label as given (class names of the official vocabulary,
            ordinal levels or values), or a reason string prefixed with ``!`` for a value that cannot be used.
        error: why the row cannot be used (a key of :data:`ROW_REASONS`, then ``": "`` and a message).
    """

    line: int
    key: str | None
    tags: dict[str, str] = field(default_factory=dict)
    given: dict[str, object] | None = None
    error: str | None = None


@dataclass
class Table:
    """A table read by :func:`read_table`.

    Attributes:
        path: the table file (or folder of JSON files).
        format: one of :data:`FORMATS`.
        rows: the rows in table order.
        apex_converted: ApertureValue and ShutterSpeedValue hold f-numbers and seconds (ExifTool, Flickr).
        vocabulary: task -> class names the given class labels refer to (``blades-json``), else None.
        ordinal: ``blades-json``: :data:`ORDINAL_MODES` entry; else ``"values"``.
    """

    path: Path
    format: str
    rows: list[TableRow]
    apex_converted: bool = False
    vocabulary: dict[str, tuple[str, ...]] | None = None
    ordinal: str = "values"


def detect_format(path: str | os.PathLike) -> str:
    """The format of a table by its name and first bytes; ValueError when none fits."""
    path = Path(path)
    if path.is_dir():
        return "exif-json"
    suffix = path.suffix.lower()
    with open(path, "rb") as fh:
        head = fh.read(65536)
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    if suffix == ".csv":
        first = text.splitlines()[0] if text else ""
        return "exiftool-csv" if "SourceFile" in first.split(",") else "csv"
    if suffix == ".jsonl":
        return "exif-jsonl"
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "exiftool-json"
    if stripped.startswith("{"):
        if "EXIF_ordinal" in text or "EXIF_categorical" in text:
            return "blades-json"
        first_line = stripped.split("\n", 1)[0].strip()
        if first_line.startswith("{") and first_line.endswith("}") and "\n{" in stripped:
            return "exif-jsonl"
        return "exif-json"
    if "\t" in text.split("\n", 1)[0]:
        return "yfcc"
    raise ValueError(
        f"{path}: cannot tell the table's format from its name and content; name it with --format "
        f"({', '.join(FORMATS)})"
    )


def read_table(path: str | os.PathLike, format: str = "auto", ordinal: str = "levels") -> Table:
    """Read a metadata table (see the module docstring). ``ordinal``: how ``blades-json`` ordinal numbers
    are read (:data:`ORDINAL_MODES`). A table that cannot be read at all (no such file, malformed JSON as a
    whole, a CSV without a path column or with unknown columns) raises ValueError or OSError naming the file
    and, where known, the line; a bad row becomes a row with ``error``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such table")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {format!r}; expected one of {', '.join(FORMATS)} or auto")
    if ordinal not in ORDINAL_MODES:
        raise ValueError(f"ordinal must be one of {ORDINAL_MODES}, got {ordinal!r}")
    if fmt == "blades-json":
        rows = list(_blades_rows(path, ordinal))
        return Table(path, fmt, rows, vocabulary=dict(BLADES_OFFICIAL_CLASSES), ordinal=ordinal)
    reader = {
        "exif-json": _exif_json_rows,
        "exif-jsonl": _exif_jsonl_rows,
        "yfcc": _yfcc_rows,
        "exiftool-json": _exiftool_json_rows,
        "exiftool-csv": _csv_rows,
        "csv": _csv_rows,
    }[fmt]
    return Table(path, fmt, [_checked_utf8(r) for r in reader(path)], apex_converted=fmt != "csv")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------
def _text(value) -> str | None:
    """A JSON or CSV value as text for the parser (None for JSON null and lists of nothing)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):  # exiftool -j prints some multi-value tags as lists: the first value
        return _text(value[0]) if value else None
    return str(value)


def _checked_utf8(row: TableRow) -> TableRow:
    if row.error is None:
        for text in (row.key or "", *row.tags.values()):
            if text.isascii():
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                row.error = f"not_utf8: the row holds bytes that are not UTF-8 ({text.encode('utf-8', 'backslashreplace')[:60]!r})"
                break
    return row


def _load_json(path: Path):
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        text = fh.read()
    try:
        return json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: line {exc.lineno}, column {exc.colno}: malformed JSON ({exc.msg}); no row imported"
        ) from None


def _mapped(tags: dict, names: dict[str, str], strip_group: bool = False) -> dict[str, str]:
    out = {}
    for key, value in tags.items():
        name = str(key).rsplit(":", 1)[-1] if strip_group else str(key)
        tag = names.get(name)
        text = _text(value)
        if tag is not None and text is not None and tag not in out:
            out[tag] = text
    return out


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------
def _blades_rows(path: Path, ordinal: str) -> Iterator[TableRow]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the official BLADES JSON is an object keyed by item, got a {type(data).__name__}")
    for line, (item, entry) in enumerate(data.items(), start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            yield TableRow(line, str(item), error=f"bad_row: item {item!r} has no 'path' string")
            continue
        given: dict[str, object] = {}
        ordinals, categoricals = entry.get("EXIF_ordinal") or {}, entry.get("EXIF_categorical") or {}
        if not isinstance(ordinals, dict) or not isinstance(categoricals, dict):
            yield TableRow(
                line, entry["path"], error=f"bad_row: item {item!r}: EXIF_ordinal/EXIF_categorical not objects"
            )
            continue
        tags = {}
        for key, task in BLADES_ORDINAL_KEYS.items():
            value = ordinals.get(key)
            if value is None:
                continue
            if isinstance(value, str):  # printed values ("1/60 sec") go through the parser
                tags[ORDINAL_SOURCES[task][0]] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                given[task] = _ordinal_number(value, ordinal)
            else:
                given[task] = f"!malformed: {key} {value!r} is not a number"
        for key, task in BLADES_CATEGORICAL_KEYS.items():
            value = categoricals.get(key)
            if value is None:
                continue
            label = value.get("cls_label") if isinstance(value, dict) else value
            classes = BLADES_OFFICIAL_CLASSES[task]
            if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes):
                given[task] = classes[label]
            else:
                given[task] = f"!malformed: {key} cls_label {label!r} is not a class index 0..{len(classes) - 1}"
        yield TableRow(line, entry["path"], tags, given)


def _ordinal_number(value: float, ordinal: str) -> object:
    if ordinal == "values":
        return float(value) if value > 0 and value == value else f"!non_positive: {value!r}"
    if value != int(value) or not 0 <= value < 100:
        return f"!malformed: {value!r} is not a level (an integer 0..99); numbers in units need ordinal='values'"
    return float(value)


def _exif_entry(line: int, key, entry) -> TableRow:
    if not isinstance(entry, dict):
        return TableRow(line, key, error=f"bad_row: expected a JSON object, got {type(entry).__name__}")
    exif = entry.get("EXIF", entry)
    if not isinstance(exif, dict):
        return TableRow(line, key, error="bad_row: 'EXIF' is not an object")
    if key is None:
        for name in ("path", "photo_id", "id", "SourceFile"):
            if entry.get(name) is not None:
                key = str(entry[name])
                break
        else:
            return TableRow(line, None, error="bad_row: no path or photo_id")
    return TableRow(line, str(key), _mapped(exif, EXTRACTOR_NAMES))


def _exif_json_rows(path: Path) -> Iterator[TableRow]:
    if path.is_dir():
        for line, file in enumerate(sorted(path.glob("*.json")), start=1):
            try:
                entry = _load_json(file)
            except (ValueError, OSError) as exc:
                yield TableRow(line, file.stem, error=f"bad_row: {exc}")
                continue
            yield _exif_entry(line, file.stem, entry)
        return
    data = _load_json(path)
    if isinstance(data, dict) and "EXIF" in data:  # one photo
        yield _exif_entry(1, None, data)
    elif isinstance(data, dict):
        for line, (key, entry) in enumerate(data.items(), start=1):
            yield _exif_entry(line, key, entry)
    elif isinstance(data, list):
        for line, entry in enumerate(data, start=1):
            yield _exif_entry(line, None, entry)
    else:
        raise ValueError(f"{path}: expected a JSON object or list of photos, got a {type(data).__name__}")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        for line, text in enumerate(fh, start=1):
            text = text.rstrip("\r\n")
            if text.strip():
                yield line, text.lstrip("\ufeff") if line == 1 else text


def _exif_jsonl_rows(path: Path) -> Iterator[TableRow]:
    for line, text in _lines(path):
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as exc:
            yield TableRow(line, None, error=f"bad_row: malformed JSON ({exc.msg}, column {exc.colno})")
            continue
        yield _exif_entry(line, None, entry)


def _yfcc_rows(path: Path) -> Iterator[TableRow]:
    for line, text in _lines(path):
        photo_id, tab, pairs = text.partition("\t")
        if not tab or not photo_id.strip():
            yield TableRow(line, None, error="bad_row: expected a photo id, a tab, then key:value pairs")
            continue
        tags = {}
        for pair in pairs.split(","):
            key, colon, value = pair.partition(":")
            if not colon:
                continue
            name = urllib.parse.unquote_plus(key)
            name = name.split(".", 1)[1] if "." in name else name  # "Exif SubIFD.Exposure Time" -> "Exposure Time"
            tags[name] = urllib.parse.unquote_plus(value)
        yield TableRow(line, photo_id.strip(), _mapped(tags, EXTRACTOR_NAMES))


def _exiftool_json_rows(path: Path) -> Iterator[TableRow]:
    data = _load_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: exiftool -j output is a JSON list, got a {type(data).__name__}")
    for line, entry in enumerate(data, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("SourceFile"), str):
            yield TableRow(line, None, error="bad_row: no SourceFile")
            continue
        yield TableRow(line, entry["SourceFile"], _mapped(entry, EXIFTOOL_NAMES, strip_group=True))


def _csv_rows(path: Path) -> Iterator[TableRow]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.lstrip("\ufeff").strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: the CSV is empty (no header row)") from None
        except csv.Error as exc:
            raise ValueError(f"{path}: line 1: malformed CSV ({exc})") from None
        exiftool = "SourceFile" in header
        path_col = next((i for i, h in enumerate(header) if h in PATH_COLUMNS), None)
        if path_col is None:
            raise ValueError(f"{path}: line 1: no path column (expected one of {', '.join(PATH_COLUMNS)})")
        columns = {}
        unknown = []
        for i, name in enumerate(header):
            tag = CSV_NAMES.get(name.rsplit(":", 1)[-1] if exiftool else name)
            if tag is not None:
                columns.setdefault(tag, i)
            elif i != path_col:
                unknown.append(name)
        if unknown and not exiftool:
            raise ValueError(
                f"{path}: line 1: unknown columns {unknown}; a plain CSV has a path column and tag columns named "
                f"by task ({', '.join(_TASK_TAGS)}) or EXIF tag ({', '.join(dict.fromkeys(_TASK_TAGS.values()))})"
            )
        line = 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line = reader.line_num
                yield TableRow(line, None, error=f"bad_row: malformed CSV ({exc})")
                continue
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                yield TableRow(line, None, error=f"bad_row: {len(values)} fields, the header has {len(header)}")
                continue
            key = values[path_col].strip()
            if not key:
                yield TableRow(line, None, error="bad_row: the path column is empty")
                continue
            tags = {tag: values[i] for tag, i in columns.items() if values[i].strip() not in ("", "-")}
            yield TableRow(line, key, tags)
