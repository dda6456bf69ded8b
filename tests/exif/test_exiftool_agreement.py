"""ExifTool's own output, imported as a table, agrees with `bfdkern index` of the same real files: at least
99% of the tags are equal, and every difference is listed with its reason."""

import math
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from bfdkern.exif import TASKS, build_manifest
from bfdkern.exif.manifest import import_table
from bfdkern.exif.reader import READ_REASONS

TAGS = ["FNumber", "ApertureValue", "ExposureTime", "ShutterSpeedValue", "FocalLength", "ISO", "Make"]
TAGS += ["MeteringMode", "ExposureMode", "WhiteBalance", "ExposureProgram"]
COMMAND = ["exiftool", "-q", "-q", "-r", "-j", *[f"-EXIF:{t}" for t in TAGS]]
"""What docs/data.md tells users to run (the EXIF group: what bfdkern reads from the files)."""

# Printed values (without -n) are rounded: ExifTool prints f-numbers to 0.1, focal lengths to 0.1 mm and
# exposure times as 1/round(1/t).
PRINT_TOLERANCE = {"aperture": 0.05, "focal_length": 0.05}


def _labels(manifest):
    with sqlite3.connect(manifest) as db:
        db.row_factory = sqlite3.Row
        return {r["path"]: r for r in db.execute("SELECT * FROM files")}


def _reason(task, ours, theirs, mine_row, printed):
    """Why a tag differs (or None when it agrees within what the printed form keeps)."""
    if ours is None and theirs is None:
        return None
    if isinstance(ours, float) and isinstance(theirs, float):
        if math.isclose(ours, theirs, rel_tol=1e-6):
            return None
        if printed and task in PRINT_TOLERANCE and abs(ours - theirs) <= PRINT_TOLERANCE[task] + 1e-9:
            return None
        if printed and task == "exposure_time" and ours < 0.25001 and abs(1 / ours - 1 / theirs) <= 0.5 + 1e-9:
            return None
        if printed and task == "exposure_time" and ours >= 0.25001 and abs(ours - theirs) <= 0.05 + 1e-9:
            return None  # ExifTool prints 1/4 s and longer to 0.1 s
        return f"values differ ({ours:g} vs ExifTool's {theirs:g})"
    if ours == theirs:
        return None
    if theirs is None and mine_row[f"{task}_source"] and "." in mine_row[f"{task}_source"]:
        return f"bfdkern reads it from the maker notes ({mine_row[f'{task}_source']}); ExifTool's EXIF group has none"
    if ours is None:
        return f"bfdkern: {mine_row[f'{task}_reason'] or mine_row['reason']}"
    if theirs is None and mine_row["path"].lower().endswith(".crw"):
        return f"{ours!r}: a CIFF file; ExifTool reports this in its CanonRaw group, exiv2 maps it to the EXIF tag"
    return f"{ours!r} vs ExifTool's {theirs!r}"


@pytest.mark.parametrize("numeric", [True, False], ids=["-n", "printed"])
def test_exiftool_output_agrees_with_index(shared_data, tmp_path, numeric):
    if shutil.which("exiftool") is None:
        pytest.skip("ExifTool is not installed")
    folder = shared_data / "exif"
    table = tmp_path / "exiftool.json"
    with open(table, "w") as out:
        subprocess.run([*COMMAND, *(["-n"] if numeric else []), str(folder)], stdout=out, check=False, timeout=300)
    theirs = import_table(folder, tmp_path / "et.sqlite", table, progress=False)
    assert theirs.indexed > 250 and not theirs.rejected, str(theirs)
    build_manifest(folder, tmp_path / "files.sqlite", workers=2, progress=False)
    a, b = _labels(tmp_path / "files.sqlite"), _labels(tmp_path / "et.sqlite")
    compared, equal, explained, differences = 0, 0, [], []
    for path in sorted(set(a) & set(b)):
        for task in TASKS:
            ours, other = a[path][f"{task}_label"], b[path][f"{task}_label"]
            reason = _reason(task, ours, other, a[path], printed=not numeric)
            unread = a[path]["reason"] in READ_REASONS
            maker = "maker notes" in (reason or "")
            if unread or maker:  # not read from the same place: listed, not counted
                if reason is not None:
                    explained.append(f"{path} {task}: {'bfdkern cannot read the file' if unread else reason}")
                continue
            compared += 1
            if reason is None:
                equal += 1
            else:
                differences.append(f"{path} {task}: {reason}")
    print(f"{equal} of {compared} tags equal ({equal / compared:.2%}); differences:")
    print("\n".join(differences))
    print(f"not compared ({len(explained)}): " + "\n".join(explained))
    assert compared > 9 * 250
    assert equal >= 0.99 * compared, "\n".join(differences)
    only_files = [p for p in set(a) - set(b) if a[p]["reason"] is None]
    assert not only_files, f"labelled by bfdkern, absent from ExifTool's output: {only_files[:5]}"
    assert Path(table).stat().st_size > 0
