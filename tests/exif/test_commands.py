"""`bfdkern index` and `bfdkern summary` end to end on a folder of photos the test writes."""

from PIL import Image

from bfdkern.cli import main
from bfdkern.exif.summary import format_label, summarize
from tests.exif import photos


def _folder(root):
    for i, make in enumerate(["Canon", "Canon", "NIKON CORPORATION", "samsung"]):
        tags = dict(photos.CAMERA_TAGS, **{"Exif.Image.Make": make, "Exif.Photo.ExposureTime": f"1/{60 * (i + 1)}"})
        if i == 3:
            del tags["Exif.Photo.WhiteBalance"]
        photos.write_photo(root / f"p{i}.jpg", tags)
    photos.write_photo(root / "plain.jpg", {})
    (root / "text.jpg").write_text("not a photo")


def test_index_then_summary(tmp_path, capsys):
    root = tmp_path / "photos"
    _folder(root)
    manifest = tmp_path / "m.sqlite"
    assert main(["index", str(root), "-o", str(manifest), "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 image files" in out and "4 with labels" in out and "unrecognised_format" in out and "no_exif" in out

    png = tmp_path / "coverage.png"
    assert main(["summary", str(manifest), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    lines = {}
    for line in out.splitlines():
        if line.strip():
            lines.setdefault(line.split()[0], line)  # the first table: frequency, usable, unique, examples
    assert lines["make"].split()[1:4] == ["66.7%", "66.7%", "3"] and "Canon (2)" in lines["make"]
    assert lines["white_balance"].split()[1:4] == ["50.0%", "50.0%", "1"] and "auto (3)" in lines["white_balance"]
    assert lines["exposure_time"].split()[3] == "4" and "1/60 s (1)" in lines["exposure_time"]
    assert "unrecognised_format" in out
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200

    summary = summarize(manifest)
    by_task = {s.task: s for s in summary.tags}
    assert summary.files == 6 and summary.labelled == 4
    assert by_task["white_balance"].missing == {"absent": 2, "file_not_read": 1}
    assert by_task["make"].frequency == 4 / 6 and by_task["make"].unique_labels == 3


def test_errors_name_the_thing(tmp_path, capsys):
    assert main(["index", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m.sqlite")]) == 2
    assert "nowhere: not a folder" in capsys.readouterr().err
    assert main(["summary", str(tmp_path / "missing.sqlite")]) == 2
    assert "missing.sqlite: no such manifest" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_bytes(b"junk" * 100)
    assert main(["summary", str(tmp_path / "junk.sqlite")]) == 2
    assert "junk.sqlite: not a bfdkern manifest" in capsys.readouterr().err


def test_label_formats():
    assert format_label("exposure_time", 1 / 60) == "1/60 s"
    assert format_label("exposure_time", 2.0) == "2 s"
    assert format_label("aperture", 2.8) == "f/2.8"
    assert format_label("focal_length", 50.0) == "50 mm"
    assert format_label("iso", 400.0) == "ISO 400"
    assert format_label("make", "Canon") == "Canon"
