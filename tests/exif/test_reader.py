"""The readers on photos with known tags and on hostile files, for both backends."""

import pytest

from bfdkern.exif import ExifReadError, get_backend, labels_of, read_exif, read_raw
from bfdkern.exif.reader import READ_REASONS, Pyexiv2Backend
from tests.exif import photos

BACKENDS = ["pyexiv2", "pillow"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return get_backend(request.param)


def test_known_tags_from_path_and_bytes(tmp_path, backend):
    path = photos.write_photo(tmp_path / "camera.jpg")
    for source in (path, str(path), path.read_bytes()):
        labels, reasons = labels_of(read_exif(source, backend))
        assert labels == pytest.approx(photos.CAMERA_LABELS)
        assert all(r is None for r in reasons.values())
    raw = read_raw(path, backend)
    assert (raw.width, raw.height) == (16, 16)
    assert raw.tags["FNumber"] == "28/10" and raw.tags["ExposureTime"] == "1/60"


def test_odd_values_reach_the_parser_as_stored(tmp_path, backend):
    tags = {
        "Exif.Image.Make": "samsung   ",
        "Exif.Photo.ExposureTime": "1/0",
        "Exif.Photo.ISOSpeedRatings": "100 200",
        "Exif.Photo.FNumber": "4294967295/1",
        "Exif.Photo.ApertureValue": "6/1",
        "Exif.Photo.MeteringMode": "255",
        "Exif.Photo.WhiteBalance": "2",
    }
    values = read_exif(photos.write_photo(tmp_path / "odd.jpg", tags), backend)
    assert values["make"].value == "samsung"
    assert values["exposure_time"].reason == "zero_denominator"
    assert values["iso"].value == 100
    assert values["aperture"].source == "ApertureValue" and values["aperture"].value == pytest.approx(8.0)
    labels, reasons = labels_of(values)
    assert labels["make"] == "Samsung" and labels["metering_mode"] == "others"
    assert labels["white_balance"] is None and reasons["white_balance"] == "nonstandard_code"
    assert reasons["focal_length"] == "absent"


def test_tags_in_ifd0_are_found(tmp_path, backend):
    # Some editors and TIFF/EP files keep the exposure tags in IFD0 rather than the Exif IFD.
    path = photos.write_photo(tmp_path / "ifd0.jpg", {"Exif.Image.Make": "Canon", "Exif.Image.FNumber": "8/1"})
    assert read_exif(path, backend)["aperture"].value == 8


def test_photo_without_exif_reads_empty(tmp_path, backend):
    path = photos.write_photo(tmp_path / "plain.jpg", {})
    assert read_raw(path, backend).tags == {}
    assert {v.reason for v in read_exif(path, backend).values()} == {"absent"}


def _hostile(tmp_path):
    full = photos.write_photo(tmp_path / "camera.jpg").read_bytes()
    sos = full.index(b"\xff\xda")
    return {
        "empty.jpg": b"",
        "text.jpg": b"this is a text file, not a photo\n",
        "truncated_header.jpg": full[: photos.app1_end(full) - 10],
        "truncated_scan.jpg": full[: sos + 20],
        "loop.jpg": photos.looping_exif(),
        "offsets.jpg": photos.out_of_range_exif(),
        "dangling.jpg": photos.dangling_exif_pointer(),
        "bomb.jpg": photos.bomb(full),
    }


def test_hostile_files_give_a_reason_or_values(tmp_path, backend):
    for name, data in _hostile(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            values = read_exif(path, backend)
        except ExifReadError as exc:
            assert exc.reason in READ_REASONS, name
            assert str(path) in str(exc), "the error names the file"
            continue
        assert len(values) == 9 and all((v.value is None) != (v.reason is None) for v in values.values()), name


def test_hostile_files_expected_outcomes(tmp_path, backend):
    files = _hostile(tmp_path)

    def reason(name):
        with pytest.raises(ExifReadError) as info:
            read_raw(files[name], backend)
        return info.value.reason

    assert reason("empty.jpg") == "empty_file"
    assert reason("text.jpg") == "unrecognised_format"
    assert reason("truncated_header.jpg") == "corrupt"
    assert reason("bomb.jpg") == "decompression_bomb"
    # Truncated pixel data does not touch the EXIF: the labels survive.
    assert read_exif(files["truncated_scan.jpg"], backend)["make"].value == "NIKON CORPORATION"
    assert read_exif(files["loop.jpg"], backend)["make"].value == "Canon"
    assert read_exif(files["dangling.jpg"], backend)["make"].value == "Sony"
    offsets = read_exif(files["offsets.jpg"], backend)
    assert offsets["aperture"].value is None and offsets["iso"].value is None and offsets["make"].value is None


def test_missing_file_and_unknown_backend(tmp_path):
    with pytest.raises(ExifReadError, match="nowhere.jpg: cannot read") as info:
        read_raw(tmp_path / "nowhere.jpg")
    assert info.value.reason == "unreadable"
    with pytest.raises(ValueError, match="unknown EXIF backend 'exiftool'"):
        get_backend("exiftool")


def test_pyexiv2_low_level_path_matches_the_public_api(tmp_path):
    fast, public = Pyexiv2Backend(low_level=True), Pyexiv2Backend(low_level=False)
    written = [
        photos.write_photo(tmp_path / "camera.jpg").read_bytes(),
        photos.write_photo(
            tmp_path / "ifd0.jpg", {"Exif.Image.FNumber": "8/1", "Exif.Image.Make": "Canon\0"}
        ).read_bytes(),
    ]
    for data in [*written, *_hostile(tmp_path).values()]:
        outcomes = []
        for backend in (fast, public):
            try:
                outcomes.append(backend.read(data))
            except ExifReadError as exc:
                outcomes.append(exc.reason)
        assert outcomes[0] == outcomes[1]
