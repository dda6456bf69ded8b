"""The fuzz corpora replayed through the fuzz targets' checks (deterministic, no atheris): every input the
fuzzers keep must stay free of escaping exceptions."""

from pathlib import Path

import pytest

from fuzz import fuzz_files, fuzz_parse

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"


@pytest.mark.parametrize("path", sorted((CORPUS / "parse").iterdir()), ids=lambda p: p.name)
def test_parse_corpus(path):
    fuzz_parse.check_one(path.read_bytes())


@pytest.mark.parametrize("path", sorted((CORPUS / "files").iterdir()), ids=lambda p: p.name)
def test_files_corpus(path):
    fuzz_files.check_one(path.read_bytes())


def test_decode_reads_any_bytes():
    assert fuzz_parse.decode(b"0:2.8\nx:y\n\xff\n26:NIKON\n") == {"FNumber": "2.8", "Make": "NIKON"}
    for data in (b"", b"\x00\xff" * 50, bytes(range(256))):
        fuzz_parse.check_one(data)
        fuzz_files.check_one(data)
