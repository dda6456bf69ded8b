"""ISO from the maker notes when the standard tag is absent or unusable: each decoding against values
worked out by hand from ExifTool's documented formulas, the order of the fallbacks, the reasons,
and the readers and the manifest carrying the maker-note source."""

import sqlite3
from fractions import Fraction

import pytest

from bfdkern.exif import build_manifest, get_backend, read_exif, read_raw
from bfdkern.exif.parse import (
    _MAKER_DECODERS,
    EXIF_TAGS,
    MAKER_ISO_SOURCES,
    MAKER_TAGS,
    REASONS,
    ParseError,
    canon_camera_iso,
    canon_shot_iso,
    casio2_iso_code,
    nikon_ii_iso,
    nikon_iso,
    parse_tags,
)
from bfdkern.exif.reader import Pyexiv2Backend
from tests.exif import photos


def iso(**raw):
    """The parsed ISO of raw tags given as keywords (``Nikon3_ISOSpeed`` for ``Nikon3.ISOSpeed``)."""
    return parse_tags({k.replace("_", "."): v for k, v in raw.items()})["iso"]


# --- each decoding, values worked out by hand ------------------------------------------------------
def test_nikon_pair_gives_its_second_value():
    # Nikon tag 0x0002 is int16u[2]: "0 ISO"; ExifTool prints it with the leading "0 " removed.
    assert nikon_iso("0 200") == 200 and isinstance(nikon_iso("0 200"), Fraction)
    assert nikon_iso("0 1000") == 1000
    for raw in ("1 1", "1 200"):  # first value 1: the 'Hi' ISO modes of the D80 and others
        with pytest.raises(ParseError) as info:
            nikon_iso(raw)
        assert info.value.reason == "undecodable" and "Hi" in str(info.value)
    for raw in ("200", "0 200 3", "2 200"):
        with pytest.raises(ParseError) as info:
            nikon_iso(raw)
        assert info.value.reason == "undecodable"


def test_nikon_iso_info_is_a_power_of_two():
    # ISO = 100 * 2^(raw/12 - 5): 60 -> 2^0, 72 -> 2^1, 84 -> 2^2, 48 -> 2^-1, 78 -> 2^1.5 = 2.828427...
    assert nikon_ii_iso("60") == 100.0
    assert nikon_ii_iso("72") == 200.0
    assert nikon_ii_iso("84") == 400.0
    assert nikon_ii_iso("48") == 50.0
    assert nikon_ii_iso("78") == pytest.approx(282.842712474619, rel=1e-12)


@pytest.mark.parametrize(
    "raw, want",
    [("16", 50), ("17", 100), ("18", 200), ("19", 400), ("20", 800), ("16484", 100), ("17984", 1600), ("49252", 100)],
)
def test_canon_camera_iso_codes(raw, want):
    # Codes 16-20 name ISO 50-800; with bit 0x4000 set the low 14 bits are the ISO:
    # 16484 = 0x4064 -> 0x64 = 100, 17984 = 0x4000 + 1600, 49252 = 0xC064 -> 0x64 = 100.
    assert canon_camera_iso(raw) == want and isinstance(canon_camera_iso(raw), Fraction)


@pytest.mark.parametrize("raw", ["0", "14", "15", "21", "32767", "65535"])
def test_canon_camera_iso_codes_without_a_number(raw):
    # 0 n/a, 14 Auto High, 15 Auto, 21 undocumented, 0x7FFF not recorded; 0xFFFF (all ones, Canon's
    # 'not set') is refused although ExifTool's bit rule would read 0x3FFF = 16383 from it.
    with pytest.raises(ParseError) as info:
        canon_camera_iso(raw)
    assert info.value.reason == "undecodable"


@pytest.mark.parametrize(
    "base, auto, want",
    [
        ("128", "0", 50.0),  # 3.125 * 2^(128/32) = 3.125 * 16
        ("160", "0", 100.0),  # 3.125 * 2^5
        ("128", "32", 100.0),  # BaseISO 50 at AutoISO 200 %
        ("224", "0", 400.0),  # 3.125 * 2^7
        ("320", "0", 3200.0),  # 3.125 * 2^10
        ("140", "0", 64.8419777325505),  # 3.125 * 2^4.375 = 50 * 2^0.375, 2^0.375 = 1.29683955465101
        ("143", "35", 147.68261459395),  # 3.125 * 2^(178/32) = 100 * 2^0.5625, 2^0.5625 = 1.4768261459395
        ("160", "65523", 75.4582213796711),  # int16s: 65523 = -13; 100 * 2^(-13/32), 2^-0.40625 = 0.754582213796711
        ("160", "-13", 75.4582213796711),  # the same value already signed
    ],
)
def test_canon_shot_info_iso(base, auto, want):
    assert canon_shot_iso(base, auto) == pytest.approx(want, rel=1e-12)


def test_canon_shot_info_without_a_value():
    for base, auto in [("0", "0"), ("0", "32"), ("128", None)]:
        with pytest.raises(ParseError) as info:
            canon_shot_iso(base, auto)
        assert info.value.reason == "undecodable"
    with pytest.raises(ParseError) as info:
        canon_shot_iso("70000", "0")  # not a 16-bit value
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("raw, want", [("3", 50), ("4", 64), ("6", 100), ("9", 200)])
def test_casio2_iso_codes(raw, want):
    assert casio2_iso_code(raw) == want


@pytest.mark.parametrize("raw", ["0", "5", "50"])
def test_casio2_iso_codes_outside_the_table(raw):
    with pytest.raises(ParseError) as info:
        casio2_iso_code(raw)
    assert info.value.reason == "undecodable"


def test_casio_plain_iso_tags():
    assert iso(Casio_ISO="64") == (Fraction(64), None, "64", "Casio.ISO")
    assert iso(Casio2_ISO="80") == (Fraction(80), None, "80", "Casio2.ISO")
    assert iso(Casio2_ISOSpeed="6") == (Fraction(100), None, "6", "Casio2.ISOSpeed")


# --- the order of the fallbacks and the reasons -----------------------------------------------------
def test_standard_exif_keeps_priority():
    assert iso(ISOSpeedRatings="400", Nikon3_ISOSpeed="0 200") == (Fraction(400), None, "400", "ISOSpeedRatings")
    assert iso(ISOSpeedRatings="400", CanonCs_ISOSpeed="17") == (Fraction(400), None, "400", "ISOSpeedRatings")
    # An unusable standard value falls back on the maker notes...
    assert iso(ISOSpeedRatings="0", Nikon3_ISOSpeed="0 200").source == "Nikon3.ISOSpeed"
    assert iso(ISOSpeedRatings="4294967295", Casio2_ISO="50").value == 50
    # ... and when nothing gives a value, the standard tag's reason is the one kept.
    assert iso(ISOSpeedRatings="0", Nikon3_ISOSpeed="1 1") == (None, "non_positive", "0", "ISOSpeedRatings")


def test_maker_sources_in_order():
    assert iso(Nikon3_ISOSpeed="0 200", NikonIi_ISO="84").source == "Nikon3.ISOSpeed"
    # A 'Hi' mode has no number in tag 0x0002, ISOInfo still has it.
    assert iso(Nikon3_ISOSpeed="1 1", NikonIi_ISO="84") == (400.0, None, "84", "NikonIi.ISO")
    # Canon: CameraISO when it is a number (as ExifTool's Composite:ISO), else BaseISO * AutoISO.
    canon = {"CanonSi_ISOSpeed": "128", "CanonSi_AutoISO": "32"}
    assert iso(CanonCs_ISOSpeed="17", **canon) == (Fraction(100), None, "17", "CanonCs.ISOSpeed")
    assert iso(CanonCs_ISOSpeed="15", **canon) == (100.0, None, "128 32", "CanonSi.ISOSpeed+AutoISO")
    assert iso(**canon).value == 100.0
    assert iso(Casio2_ISO="80", Casio2_ISOSpeed="3").value == 80


def test_maker_values_get_the_same_checks_and_reasons():
    assert iso(Nikon3_ISOSpeed="0 0") == (None, "non_positive", "0 0", "Nikon3.ISOSpeed")
    assert iso(Casio2_ISO="0").reason == "non_positive"
    assert iso(Casio2_ISO="4294967295").reason == "sentinel"
    assert iso(Casio_ISO="20000000").reason == "out_of_range"
    assert iso(Casio_ISO="1/0").reason == "zero_denominator"
    assert iso(Nikon3_ISOSpeed="0 abc").reason == "malformed"
    assert iso(Nikon3_ISOSpeed="0 4294967295").reason == "sentinel"
    assert iso(Nikon3_ISOSpeed=" \x00 ").reason == "empty"
    assert iso(CanonCs_ISOSpeed="16384").reason == "non_positive"  # 0x4000 | 0
    assert iso(NikonIi_ISO="0").value == 3.125  # 100 * 2^-5: documented, small, still in range
    assert iso(NikonIi_ISO="100000").reason == "out_of_range"  # no float overflow
    assert iso(CanonSi_ISOSpeed="32767", CanonSi_AutoISO="32767").reason == "out_of_range"
    assert iso(CanonSi_ISOSpeed="32767", CanonSi_AutoISO="32767").source == "CanonSi.ISOSpeed+AutoISO"
    # The first present source's reason is kept when none gives a value.
    both = iso(CanonCs_ISOSpeed="15", CanonSi_ISOSpeed="0", CanonSi_AutoISO="0")
    assert both == (None, "undecodable", "15", "CanonCs.ISOSpeed")
    assert iso(CanonSi_AutoISO="32") == (None, "absent", None, None)  # AutoISO alone is no source
    assert iso() == (None, "absent", None, None)
    for source in MAKER_ISO_SOURCES:
        assert iso(**{source.split("+")[0].replace(".", "_"): "junk"}).reason == "malformed"


def test_tables_agree():
    assert list(_MAKER_DECODERS) == list(MAKER_ISO_SOURCES)
    assert not set(MAKER_TAGS) & set(EXIF_TAGS)
    assert set(MAKER_TAGS) == {t for tags in MAKER_ISO_SOURCES.values() for t in tags}
    assert "undecodable" in REASONS


# --- the readers and the manifest --------------------------------------------------------------------
MAKER_PHOTOS = {
    "nikon.jpg": ({"Exif.Image.Make": "NIKON CORPORATION", "Exif.Nikon3.ISOSpeed": "0 200"}, 200, "Nikon3.ISOSpeed"),
    "canon.jpg": (
        {
            "Exif.Image.Make": "Canon",
            "Exif.CanonCs.ISOSpeed": "15",
            "Exif.CanonSi.ISOSpeed": "128",
            "Exif.CanonSi.AutoISO": "32",
        },
        100,
        "CanonSi.ISOSpeed+AutoISO",
    ),
    "casio.jpg": ({"Exif.Image.Make": "CASIO COMPUTER CO.,LTD", "Exif.Casio2.ISO": "80"}, 80, "Casio2.ISO"),
    "both.jpg": (
        {"Exif.Image.Make": "NIKON CORPORATION", "Exif.Photo.ISOSpeedRatings": "400", "Exif.Nikon3.ISOSpeed": "0 200"},
        400,
        "ISOSpeedRatings",
    ),
}


@pytest.fixture
def maker_photos(tmp_path):
    folder = tmp_path / "photos"
    return {name: photos.write_photo(folder / name, tags) for name, (tags, _, _) in MAKER_PHOTOS.items()}


def test_pyexiv2_reads_maker_iso_on_both_paths(maker_photos):
    fast, public = Pyexiv2Backend(low_level=True), Pyexiv2Backend(low_level=False)
    for name, path in maker_photos.items():
        _, want, source = MAKER_PHOTOS[name]
        data = path.read_bytes()
        assert fast.read(data) == public.read(data), name
        value = read_exif(path, fast)["iso"]
        assert (value.value, value.source) == (want, source), name
        assert set(fast.read(data).tags) <= set(EXIF_TAGS) | set(MAKER_TAGS)


def test_pillow_sees_no_maker_notes_and_parses_what_it_has(maker_photos):
    pillow = get_backend("pillow")
    for name, path in maker_photos.items():
        tags = read_raw(path, pillow).tags
        assert set(tags) <= set(EXIF_TAGS), name
        value = read_exif(path, pillow)["iso"]
        if name == "both.jpg":
            assert (value.value, value.source) == (400, "ISOSpeedRatings")
        else:
            assert value == (None, "absent", None, None), name


def test_manifest_stores_the_maker_source(maker_photos, tmp_path):
    manifest = tmp_path / "m.sqlite"
    build_manifest(tmp_path / "photos", manifest, workers=0, progress=False)
    with sqlite3.connect(manifest) as db:
        rows = {
            p: (label, source, raw)
            for p, label, source, raw in db.execute("SELECT path, iso_label, iso_source, iso_raw FROM files")
        }
    assert rows["nikon.jpg"] == (200.0, "Nikon3.ISOSpeed", "0 200")
    assert rows["canon.jpg"] == (100.0, "CanonSi.ISOSpeed+AutoISO", "128 32")
    assert rows["casio.jpg"] == (80.0, "Casio2.ISO", "80")
    assert rows["both.jpg"] == (400.0, "ISOSpeedRatings", "400")


def test_rows_of_an_older_parser_are_read_again(maker_photos, tmp_path):
    # A manifest made before the maker-note fallbacks (parser 1) holds iso = NULL for these files:
    # a re-run must read them again rather than keep the stale rows.
    manifest = tmp_path / "m.sqlite"
    build_manifest(tmp_path / "photos", manifest, workers=0, progress=False)
    with sqlite3.connect(manifest) as db:
        db.execute("UPDATE files SET parser = 1, iso_label = NULL, iso_source = NULL")
    report = build_manifest(tmp_path / "photos", manifest, workers=0, progress=False)
    assert report.indexed == len(maker_photos) and report.unchanged == 0
    with sqlite3.connect(manifest) as db:
        assert db.execute("SELECT COUNT(*) FROM files WHERE iso_label IS NULL").fetchone()[0] == 0
