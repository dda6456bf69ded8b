"""Labels from metadata tables: every format imports into the same manifest rows as the files' own EXIF,
through the same parser; bad rows are recorded with their line and reason, never lose the good ones."""

import json
import sqlite3
import urllib.parse

import pytest

from bfdkern.exif import build_manifest
from bfdkern.exif.manifest import import_table
from bfdkern.exif.tables import detect_format, read_table
from bfdkern.exif.vocab import BLADES_OFFICIAL_CLASSES
from tests.exif import photos

# Per photo: ExifTool-style printed values, and the labels they must give.
PRINTED = {
    "a.jpg": {
        "FNumber": "F2.8",
        "ExposureTime": "1/60 sec",
        "FocalLength": "50.0 mm",
        "ISO": "400",
        "Make": "NIKON CORPORATION",
        "MeteringMode": "Multi-segment",
        "ExposureMode": "Manual",
        "WhiteBalance": "Auto",
        "ExposureProgram": "Aperture-priority AE",
    },
    "b.jpg": {
        "FNumber": "f/4",
        "ExposureTime": "10/1250 sec",
        "FocalLength": "5.4 mm (35 mm equivalent: 28.0 mm)",
        "ISO": "4294967295",
        "Make": "Canon\x00\x00",
        "MeteringMode": "Center-weighted average",
        "ExposureMode": "Auto bracket",
        "WhiteBalance": "Manual",
        "ExposureProgram": "Program AE",
    },
    "c.jpg": {
        "FNumber": "Unknown",
        "ExposureTime": "2 sec",
        "FocalLength": "",
        "ISO": "ISO 100",
        "Make": "samsung",
        "MeteringMode": "Spotty",
        "ExposureMode": "7",
        "WhiteBalance": "0",
        "ExposureProgram": "Not Defined",
    },
}
LABELS = {
    "a.jpg": {
        "aperture": 2.8,
        "exposure_time": 1 / 60,
        "focal_length": 50.0,
        "iso": 400.0,
        "make": "Nikon",
        "metering_mode": "pattern",
        "exposure_mode": "manual",
        "white_balance": "auto",
        "exposure_program": "aperture_priority",
    },
    "b.jpg": {
        "aperture": 4.0,
        "exposure_time": 0.008,
        "focal_length": 5.4,
        "iso": None,
        "make": "Canon",
        "metering_mode": "center_weighted",
        "exposure_mode": "auto_bracket",
        "white_balance": "manual",
        "exposure_program": "normal",
    },
    "c.jpg": {
        "aperture": None,
        "exposure_time": 2.0,
        "focal_length": None,
        "iso": 100.0,
        "make": "Samsung",
        "metering_mode": None,
        "exposure_mode": None,
        "white_balance": "auto",
        "exposure_program": "others",
    },
}
REASONS = {
    ("b.jpg", "iso"): "sentinel",
    ("c.jpg", "aperture"): "sentinel",
    ("c.jpg", "metering_mode"): "unknown_name",
    ("c.jpg", "exposure_mode"): "nonstandard_code",
}
EXTRACTOR = {
    "FNumber": "F-Number",
    "ExposureTime": "Exposure Time",
    "FocalLength": "Focal Length",
    "ISO": "ISO Speed Ratings",
    "Make": "Make",
    "MeteringMode": "Metering Mode",
    "ExposureMode": "Exposure Mode",
    "WhiteBalance": "White Balance Mode",
    "ExposureProgram": "Exposure Program",
}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for name in PRINTED:
        photos.write_photo(root / "sub" / name, {})
    photos.write_photo(root / "extra.jpg", {})  # not in the tables: no row
    return root


def _write(tmp_path, fmt, root):
    path = (
        tmp_path
        / {
            "exiftool-json": "t.json",
            "exiftool-csv": "t.csv",
            "csv": "plain.csv",
            "exif-json": "exif.json",
            "exif-jsonl": "exif.jsonl",
            "yfcc": "yfcc.txt",
        }[fmt]
    )
    if fmt == "exiftool-json":
        rows = [
            {"SourceFile": str(root / "sub" / n), **{f"EXIF:{k}": v for k, v in t.items()}} for n, t in PRINTED.items()
        ]
        path.write_text(json.dumps(rows))
    elif fmt in ("exiftool-csv", "csv"):
        keys = list(PRINTED["a.jpg"])
        head = ["SourceFile", *keys] if fmt == "exiftool-csv" else ["path", *keys]
        lines = [",".join(head)]
        for n, t in PRINTED.items():
            key = str(root / "sub" / n) if fmt == "exiftool-csv" else f"sub/{n}"
            lines.append(",".join([key] + [json.dumps(t[k]) if "," in t[k] else t[k] for k in keys]))
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "exif-json":
        path.write_text(json.dumps({n: {"EXIF": {EXTRACTOR[k]: v for k, v in t.items()}} for n, t in PRINTED.items()}))
    elif fmt == "exif-jsonl":
        path.write_text(
            "".join(
                json.dumps({"path": n, "EXIF": {EXTRACTOR[k]: v for k, v in t.items()}}) + "\n"
                for n, t in PRINTED.items()
            )
        )
    elif fmt == "yfcc":
        lines = []
        for n, t in PRINTED.items():
            pairs = ",".join(
                f"{urllib.parse.quote_plus('Exif SubIFD.' + EXTRACTOR[k])}:{urllib.parse.quote_plus(v)}"
                for k, v in t.items()
            )
            lines.append(f"{n.split('.')[0]}\t{pairs}")
        path.write_text("\n".join(lines) + "\n")
    return path


def _rows(manifest):
    with sqlite3.connect(manifest) as db:
        db.row_factory = sqlite3.Row
        return {r["path"]: r for r in db.execute("SELECT * FROM files")}


@pytest.mark.parametrize("fmt", ["exiftool-json", "exiftool-csv", "csv", "exif-json", "exif-jsonl", "yfcc"])
def test_every_format_gives_the_same_labels(tmp_path, folder, fmt):
    table = _write(tmp_path, fmt, folder)
    assert detect_format(table) == fmt
    manifest = tmp_path / "m.sqlite"
    report = import_table(folder, manifest, table, progress=False)
    assert report.indexed == 3 and not report.rejected, str(report)
    rows = _rows(manifest)
    assert set(rows) == {f"sub/{n}" for n in PRINTED}  # extra.jpg is not in the table
    for name, labels in LABELS.items():
        row = rows[f"sub/{name}"]
        for task, want in labels.items():
            got = row[f"{task}_label"]
            assert got == (pytest.approx(want) if isinstance(want, float) else want), (fmt, name, task)
            if want is None:
                blank = "absent" if fmt.endswith("csv") else "empty"  # a CSV's empty cell is no value at all
                assert row[f"{task}_reason"] == REASONS.get((name, task), blank if task == "focal_length" else None)
        assert row["backend"] == f"table:{fmt}" and row["line"] >= 1


def test_reimport_of_an_unchanged_table_reads_nothing(tmp_path, folder):
    table = _write(tmp_path, "csv", folder)
    manifest = tmp_path / "m.sqlite"
    import_table(folder, manifest, table, progress=False)
    again = import_table(folder, manifest, table, progress=False)
    assert again.indexed == 0 and again.unchanged == 3 and "unchanged" in str(again)
    table.write_text(table.read_text().replace("F2.8", "F3.5"))
    third = import_table(folder, manifest, table, progress=False)
    assert third.indexed == 3 and _rows(manifest)["sub/a.jpg"]["aperture_label"] == 3.5


def test_bad_rows_are_recorded_and_good_rows_kept(tmp_path, folder):
    table = tmp_path / "bad.jsonl"
    good = {"path": "a.jpg", "EXIF": {"F-Number": "F2.8"}}
    lines = [
        json.dumps(good),
        '{"path": "b.jpg", "EXIF": {"F-Number": ',  # malformed JSON
        json.dumps({"EXIF": {"F-Number": "F2"}}),  # no path
        json.dumps({"path": "nowhere.jpg", "EXIF": {}}),  # no such file
        json.dumps({"path": "sub/a.jpg", "EXIF": {"F-Number": "F8"}}),  # duplicate of line 1
    ]
    raw = "\n".join(lines).encode() + b"\n" + b'{"path": "c.jpg", "EXIF": {"Make": "Ni\xffkon"}}\n'  # not UTF-8
    table.write_bytes(raw)
    manifest = tmp_path / "m.sqlite"
    report = import_table(folder, manifest, table, progress=False)
    assert report.indexed == 1 and _rows(manifest)["sub/a.jpg"]["aperture_label"] == 2.8
    assert report.rejected == {"bad_row": 2, "missing_file": 1, "duplicate": 1, "not_utf8": 1}
    with sqlite3.connect(manifest) as db:
        rejects = {line: (reason, detail) for _, line, _, reason, detail in db.execute("SELECT * FROM rejects")}
    assert rejects[2][0] == "bad_row" and "malformed JSON" in rejects[2][1]
    assert rejects[5][0] == "duplicate" and "line 1 already names" in rejects[5][1]
    assert "rejects table" in str(report) and "missing_file" in str(report)


def test_whole_table_errors_name_the_file_and_line(tmp_path, folder):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"SourceFile": "a.jpg",\n "FNumber": }]')
    with pytest.raises(ValueError, match=r"broken.json: line 2, column .*malformed JSON"):
        import_table(folder, tmp_path / "m.sqlite", broken, progress=False)
    unknown = tmp_path / "u.csv"
    unknown.write_text("path,aperture,shoe_size\na.jpg,2.8,44\n")
    with pytest.raises(ValueError, match=r"u.csv: line 1: unknown columns \['shoe_size'\]"):
        import_table(folder, tmp_path / "m.sqlite", unknown, progress=False)
    nopath = tmp_path / "n.csv"
    nopath.write_text("aperture\n2.8\n")
    with pytest.raises(ValueError, match="no path column"):
        read_table(nopath)
    with pytest.raises(FileNotFoundError, match="no such table"):
        import_table(folder, tmp_path / "m.sqlite", tmp_path / "none.csv", progress=False)


def test_official_blades_json_keeps_class_labels_and_levels(tmp_path, folder):
    data = {
        "0": {
            "path": "/data0/elsewhere/images/128/a.jpg",
            "EXIF_ordinal": {"ISO": 2, "Aperture": 0, "Focal Length": 1, "Exposure Time": 2},
            "EXIF_categorical": {
                "Make": {"cls_label": 2},
                "Metering Mode": {"cls_label": 6},
                "Exposure Mode": {"cls_label": 4},
                "White Balance Mode": {"cls_label": 1},
                "Exposure Program": {"cls_label": 5},
            },
        },
        "1": {
            "path": "/data0/elsewhere/images/128/b.jpg",
            "EXIF_ordinal": {"ISO": 2.5, "Aperture": "F2.8", "Exposure Time": "1/60 sec"},
            "EXIF_categorical": {"Make": {"cls_label": 10}},
        },
        "2": {"EXIF_ordinal": {}},
    }
    table = tmp_path / "fdf_ccby2_exif_ordinal_categorical.json"
    table.write_text(json.dumps(data))
    manifest = tmp_path / "m.sqlite"
    report = import_table(folder, manifest, table, progress=False)
    assert report.indexed == 2 and report.rejected == {"bad_row": 1}
    rows = _rows(manifest)
    a, b = rows["sub/a.jpg"], rows["sub/b.jpg"]
    assert (a["iso_label"], a["aperture_label"], a["focal_length_label"], a["exposure_time_label"]) == (2, 0, 1, 2)
    assert a["make_label"] == "FUJIFILM" and a["metering_mode_label"] == "multi-segment"
    assert a["exposure_program_label"] == "aperture priority" and a["white_balance_label"] == "manual"
    assert b["iso_label"] is None and b["iso_reason"] == "malformed"  # 2.5 is not a level
    assert b["aperture_label"] == 2.8 and b["exposure_time_label"] == pytest.approx(1 / 60)  # seconds, not 60
    assert b["make_label"] is None and b["make_reason"] == "malformed"
    with sqlite3.connect(manifest) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
    assert json.loads(meta["vocabulary"])["make"] == list(BLADES_OFFICIAL_CLASSES["make"])
    assert meta["ordinal"] == "levels" and meta["labels"] == "table:blades-json"


def test_one_manifest_one_source_of_labels(tmp_path, folder):
    manifest = tmp_path / "m.sqlite"
    build_manifest(folder, manifest, workers=0, progress=False)
    with pytest.raises(ValueError, match="holds labels read from the files"):
        import_table(folder, manifest, _write(tmp_path, "csv", folder), progress=False)
    other = tmp_path / "t.sqlite"
    import_table(folder, other, _write(tmp_path, "csv", folder), progress=False)
    with pytest.raises(ValueError, match="holds labels imported from"):
        build_manifest(folder, other, workers=0, progress=False)


def test_cli_import_and_summary_show_the_row_reasons(tmp_path, folder, capsys):
    from bfdkern.cli import main

    table = _write(tmp_path, "exif-jsonl", folder)
    table.write_text(table.read_text() + '{"path": "gone.jpg", "EXIF": {}}\nnot json\n')
    manifest = tmp_path / "m.sqlite"
    assert main(["index", str(folder), "-o", str(manifest), "--table", str(table), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 files under" in out and "table rows not used: 2" in out
    assert main(["summary", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "table rows not used (table:exif-jsonl" in out and "missing_file" in out and "bad_row" in out
    assert main(["index", str(folder), "-o", str(manifest), "--table", str(tmp_path / "nope.json")]) == 2
    assert "no such table" in capsys.readouterr().err


def test_rows_that_disagree_with_the_files_own_exif_are_recorded(tmp_path):
    root = tmp_path / "photos"
    photos.write_photo(root / "a.jpg")  # the file says f/2.8, ISO 400, NIKON
    photos.write_photo(root / "b.jpg")
    table = tmp_path / "t.csv"
    table.write_text("path,FNumber,ISO,Make\na.jpg,F2.8,400,Nikon\nb.jpg,F4,400,Canon\n")
    manifest = tmp_path / "m.sqlite"
    report = import_table(root, manifest, table, check_files=True, workers=0, progress=False)
    assert report.disagreements == {"aperture": 1, "make": 1} and "column disagree" in str(report)
    rows = _rows(manifest)
    assert rows["a.jpg"]["disagree"] is None
    assert json.loads(rows["b.jpg"]["disagree"]) == {"aperture": [4.0, 2.8], "make": ["Canon", "Nikon"]}
    assert rows["b.jpg"]["aperture_label"] == 4.0  # the table's label is kept
