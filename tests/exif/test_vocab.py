"""Vocabularies: canonical makes, enumeration codes, agreement with the task spec and the docs."""

from pathlib import Path

import pytest

from bfdkern.exif import vocab
from bfdkern.exif.manifest import FILE_REASONS
from bfdkern.exif.parse import REASONS
from bfdkern.exif.vocab import CATEGORICAL_TAGS
from bfdkern.tasks import blades_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "maker, make",
    [
        ("NIKON CORPORATION", "Nikon"),
        ("NIKON", "Nikon"),
        ("Canon", "Canon"),
        ("CANON INC.\x00\x00", "Canon"),
        ("samsung", "Samsung"),
        ("SAMSUNG TECHWIN", "Samsung"),
        ("SONY", "Sony"),
        ("Sony Ericsson", "others"),
        ("FUJIFILM", "Fujifilm"),
        ("Fuji Photo Film Co., Ltd.", "Fujifilm"),
        ("OLYMPUS OPTICAL CO.,LTD", "Olympus"),
        ("OLYMPUS IMAGING CORP.", "Olympus"),
        ("OM Digital Solutions", "Olympus"),
        ("Panasonic", "Panasonic"),
        ("HUAWEI", "Huawei"),
        ("Apple", "Apple"),
        ("  apple  ", "Apple"),
        ("EASTMAN KODAK COMPANY", "others"),
        ("Xiaomi", "others"),
        ("Canonical Ltd", "others"),  # a first word that merely starts like a make
    ],
)
def test_canonical_make(maker, make):
    assert vocab.canonical_make(maker) == make


@pytest.mark.parametrize(
    "task, code, name",
    [
        ("metering_mode", 1, "average"),
        ("metering_mode", 5, "pattern"),
        ("metering_mode", 6, "partial"),
        ("metering_mode", 0, "others"),
        ("metering_mode", 255, "others"),
        ("metering_mode", 7, "others"),
        ("exposure_mode", 2, "auto_bracket"),
        ("exposure_mode", 3, None),
        ("white_balance", 1, "manual"),
        ("white_balance", 2, None),
        ("exposure_program", 0, "others"),
        ("exposure_program", 8, "landscape"),
        ("exposure_program", 9, "others"),
    ],
)
def test_class_of_code(task, code, name):
    assert vocab.class_of_code(task, code) == name


def test_unknown_enumeration_task_is_named():
    with pytest.raises(KeyError, match="no enumeration task named 'make'"):
        vocab.class_of_code("make", 1)


def test_codes_follow_the_spec_class_order():
    # Standard codes in increasing order give the spec's classes in order, "others" last.
    spec = blades_spec()
    for task, table in vocab.CODES.items():
        classes = spec[task].classes
        assert classes == CATEGORICAL_TAGS[task]
        assert [table[c] for c in sorted(table)] == [c for c in classes if c != vocab.OTHERS]
    makes = set(vocab.MAKE_FIRST_WORDS.values())
    assert makes == set(spec["make"].classes) - {vocab.OTHERS}


def test_docs_carry_the_vocabulary_table_and_the_reasons():
    docs = (ROOT / "docs" / "exif.md").read_text()
    table = vocab.vocabulary_table()
    assert table in docs, "docs/exif.md is out of date: paste vocab.vocabulary_table()"
    assert table in vocab.__doc__, "the vocab module docstring is out of date: paste vocab.vocabulary_table()"
    for reason, meaning in {**REASONS, **FILE_REASONS}.items():
        assert f"| `{reason}` | {meaning} |" in docs, reason
