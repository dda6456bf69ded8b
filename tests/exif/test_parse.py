"""Exact parsing of raw EXIF strings: units, fractions, APEX fallbacks and the missing reasons."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bfdkern.exif.parse import (
    PLAUSIBLE,
    REASONS,
    ParseError,
    apex_to_f_number,
    apex_to_seconds,
    clean_text,
    parse_code,
    parse_number,
    parse_tags,
)


@given(st.integers(1, 2**32 - 2), st.integers(1, 2**32 - 2))
def test_rational_is_exact(num, den):
    assert parse_number(f"{num}/{den}") == Fraction(num, den)


def test_units_fraction_and_whole_seconds():
    # The research scripts read '1/60 sec' as 60 and '2 sec' as 2: here both are seconds.
    assert parse_tags({"ExposureTime": "1/60"})["exposure_time"].value == Fraction(1, 60)
    assert parse_tags({"ExposureTime": "2"})["exposure_time"].value == 2
    assert parse_tags({"ExposureTime": "20/10"})["exposure_time"].value == 2
    assert parse_tags({"FNumber": "14/5"})["aperture"].value == Fraction(28, 10)
    assert parse_tags({"FocalLength": "2.8"})["focal_length"].value == Fraction(14, 5)


def test_tuple_takes_first_value_and_padding_is_ignored():
    assert parse_tags({"ISOSpeedRatings": "100 200"})["iso"].value == 100
    assert parse_tags({"ISOSpeedRatings": "  800\x00\x00 "})["iso"].value == 800
    assert parse_tags({"Make": "Canon\x00\x00\x00"})["make"].value == "Canon"
    assert clean_text("  NIKON   CORPORATION \x00junk") == "NIKON CORPORATION"


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("\x00\x00\x00\x00", "empty"),
        ("abc", "malformed"),
        ("1/2/3", "malformed"),
        ("2.8/10", "malformed"),
        ("1/0", "zero_denominator"),
        ("0/0", "zero_denominator"),
        ("4294967295", "sentinel"),
        ("4294967295/1", "sentinel"),
        ("1/4294967295", "sentinel"),
    ],
)
def test_number_reasons(raw, reason):
    with pytest.raises(ParseError) as info:
        parse_number(raw)
    assert info.value.reason == reason
    assert info.value.reason in REASONS


@pytest.mark.parametrize(
    "tags, task, reason",
    [
        ({}, "aperture", "absent"),
        ({"FNumber": "0/10"}, "aperture", "non_positive"),
        ({"ExposureTime": "-1/60"}, "exposure_time", "non_positive"),
        ({"FocalLength": "500000/1"}, "focal_length", "out_of_range"),
        ({"ISOSpeedRatings": "0"}, "iso", "non_positive"),
        ({"ISOSpeedRatings": "4294967295"}, "iso", "sentinel"),
        ({"ISOSpeedRatings": "99999999"}, "iso", "out_of_range"),
        ({"ExposureTime": "1/0"}, "exposure_time", "zero_denominator"),
        ({"FNumber": "1/0", "ApertureValue": "5000/1"}, "aperture", "zero_denominator"),  # first tag's reason
        ({"MeteringMode": "five"}, "metering_mode", "malformed"),
        ({"MeteringMode": "5/2"}, "metering_mode", "malformed"),
        ({"Make": "\x00\x00"}, "make", "empty"),
        ({"Make": "1234 --"}, "make", "malformed"),
    ],
)
def test_tag_reasons(tags, task, reason):
    value = parse_tags(tags)[task]
    assert value.value is None and value.reason == reason
    assert reason in REASONS


def test_apex_fallbacks_only_when_the_direct_tag_fails():
    # ApertureValue 5 -> f/2^(5/2) = f/5.657; ShutterSpeedValue 6 -> 2^-6 s = 1/64 s.
    v = parse_tags({"ApertureValue": "5/1", "ShutterSpeedValue": "6/1"})
    assert v["aperture"].value == pytest.approx(2**2.5) and v["aperture"].source == "ApertureValue"
    assert v["exposure_time"].value == pytest.approx(1 / 64) and v["exposure_time"].source == "ShutterSpeedValue"
    v = parse_tags(
        {"FNumber": "0/0", "ApertureValue": "4/1", "ExposureTime": "4294967295/1", "ShutterSpeedValue": "-2/1"}
    )
    assert v["aperture"].value == pytest.approx(4.0) and v["aperture"].ok
    assert v["exposure_time"].value == pytest.approx(4.0)  # Tv = -2: a 4 s exposure
    v = parse_tags({"FNumber": "56/10", "ApertureValue": "4/1"})
    assert v["aperture"].value == Fraction(28, 5) and v["aperture"].source == "FNumber"


def test_apex_formulas_against_known_stops():
    for av, n in [(0, 1.0), (1, 1.4142), (2, 2.0), (3, 2.8284), (4, 4.0), (6, 8.0)]:
        assert apex_to_f_number(Fraction(av)) == pytest.approx(n, rel=1e-4)
    for tv, t in [(0, 1.0), (1, 0.5), (-1, 2.0), (7, 1 / 128)]:
        assert apex_to_seconds(Fraction(tv)) == pytest.approx(t)


def test_codes_and_plausible_bounds():
    assert parse_code("255") == 255
    assert parse_code("3 0") == 3
    for task, (low, high) in PLAUSIBLE.items():
        assert 0 < low < high
        tag = {
            "aperture": "FNumber",
            "exposure_time": "ExposureTime",
            "focal_length": "FocalLength",
            "iso": "ISOSpeedRatings",
        }[task]
        assert parse_tags({tag: str(Fraction(low))})[task].ok
        assert parse_tags({tag: str(Fraction(high))})[task].ok
        assert parse_tags({tag: str(Fraction(high) * 2)})[task].reason == "out_of_range"


def test_every_task_reports_value_or_reason():
    values = parse_tags({"FNumber": "x", "Make": "Canon", "WhiteBalance": "2"})
    assert len(values) == 9
    for v in values.values():
        assert (v.value is None) != (v.reason is None)
