"""Hostile tag values never stop a collection: every parser path returns a value or a reason for
any string, and the manifest stores every row (or a row with a reason) without raising."""

import sqlite3
import string
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bfdkern.exif import build_manifest, read_exif
from bfdkern.exif.manifest import COLUMNS, FILE_REASONS, _connect, write_rows
from bfdkern.exif.parse import MAKER_TAGS, REASONS, parse_tags
from tests.exif import photos
from tests.exif.photos import ASCII, RATIONAL, SHORT, ascii_value

LONG_DIGITS = {
    # tag id -> (task, crafted ASCII value, expected reason)
    0x9207: ("metering_mode", "1" * 25, "malformed"),  # SQLite INTEGER overflow before
    0xA402: ("exposure_mode", "9" * 20, "malformed"),
    0xA403: ("white_balance", "4" * 40, "malformed"),
    0x8822: ("exposure_program", "-" + "7" * 30, "malformed"),
    0x829D: ("aperture", "1" * 5000, "malformed"),  # the 4300-digit int limit
    0x829A: ("exposure_time", "1/" + "3" * 400, "malformed"),  # float overflow in a division
    0x920A: ("focal_length", "9" * 400 + "/7", "malformed"),
    0x8827: ("iso", "0." + "0" * 60 + "1", "out_of_range"),  # positive, rounds towards 0.0
}


def _hostile_jpeg() -> bytes:
    entries = [(tag, ASCII, ascii_value(text)) for tag, (_, text, _) in LONG_DIGITS.items()]
    return photos.exif_jpeg(entries, [(0x010F, ASCII, ascii_value("Canon"))])


@pytest.mark.parametrize("backend", ["pyexiv2", "pillow"])
def test_long_ascii_numbers_give_reasons(backend):
    values = read_exif(_hostile_jpeg(), backend)
    assert values["make"].value == "Canon"
    for task, _, reason in LONG_DIGITS.values():
        assert values[task].value is None and values[task].reason == reason, task


@pytest.mark.parametrize("workers", [0, 2])
def test_one_hostile_file_never_stops_the_collection(tmp_path, workers):
    root = tmp_path / "photos"
    for i in range(6):
        photos.write_photo(root / f"ok{i}.jpg")
    (root / "hostile.jpg").write_bytes(_hostile_jpeg())
    manifest = tmp_path / "m.sqlite"
    report = build_manifest(root, manifest, workers=workers, batch_size=2, progress=False)
    assert report.indexed == 7 and report.labelled == 7
    with sqlite3.connect(manifest) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM files WHERE path = 'hostile.jpg'").fetchone()
        assert db.execute("SELECT COUNT(*) FROM files WHERE make_label = 'Nikon'").fetchone()[0] == 6
    assert row["make_label"] == "Canon" and row["reason"] is None
    for task, text, reason in LONG_DIGITS.values():
        assert row[f"{task}_reason"] == reason and row[f"{task}_value"] is None
        assert row[f"{task}_raw"] == text  # the raw string is kept whole


def test_writer_stores_or_rejects_every_row(tmp_path):
    db = _connect(tmp_path / "m.sqlite")
    insert = f"INSERT OR REPLACE INTO files VALUES ({', '.join('?' * len(COLUMNS))})"

    def row(path, **values):
        r = dict.fromkeys(COLUMNS)
        r.update(path=path, size=1, mtime_ns=2, backend="pyexiv2", parser=2, width=0, height=0, **values)
        return tuple(r.values())

    rows = [
        row("fine.jpg", make_label="Nikon"),
        row("huge.jpg", metering_mode_value=2**70),  # beyond SQLite's 64-bit INTEGER
        row("surrogate.jpg", make_value="Nik\udcffon", make_label="Nikon"),  # undecodable bytes
    ]
    stored = write_rows(db, insert, rows, "pyexiv2", str(tmp_path))
    got = {r[0]: r for r in db.execute("SELECT path, reason, detail, make_value FROM files")}
    db.close()
    assert set(got) == {"fine.jpg", "huge.jpg", "surrogate.jpg"} and len(stored) == 3
    assert got["fine.jpg"][1] is None
    assert got["huge.jpg"][1] == "unstorable" and "huge.jpg" in got["huge.jpg"][2] and "unstorable" in FILE_REASONS
    assert got["surrogate.jpg"][1] is None and got["surrogate.jpg"][3] == "Nik\\udcffon"


_NUMBERISH = st.text(alphabet=string.digits + "/.-+ \x00eE", min_size=0, max_size=600) | st.text(max_size=50)
_TAGS = ["FNumber", "ApertureValue", "ExposureTime", "ShutterSpeedValue", "FocalLength", "ISOSpeedRatings", "Make"]
_TAGS += ["MeteringMode", "ExposureMode", "WhiteBalance", "ExposureProgram", *MAKER_TAGS]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_TAGS), _NUMBERISH, max_size=6))
def test_parse_returns_a_value_or_a_reason_for_any_text(raw):
    for task, value in parse_tags(raw).items():
        assert (value.value is None) == (value.reason is not None), task
        assert value.reason is None or value.reason in REASONS


@pytest.mark.parametrize("backend", ["pyexiv2", "pillow"])
def test_crafted_blocks_read_as_written(backend):
    # The builder the hostile tests rely on: a RATIONAL and a SHORT read back as stored.
    data = photos.exif_jpeg([(0x829D, RATIONAL, b"\x1c\0\0\0\x0a\0\0\0"), (0x9207, SHORT, b"\x05\0")])
    values = read_exif(data, backend)
    assert values["aperture"].raw == "28/10" and values["aperture"].value == Fraction(14, 5)
    assert values["metering_mode"].value == 5
