"""`bfdkern detect FILES_OR_DIRS --output`: a folder scored in chunks, each written as it is scored; an
unreadable file is a row with its error; the summary counts both; --strict and nothing-readable exit codes."""

import csv
import json
import os

import pytest

from bfdkern.detect import load_detector
from tests.detect.cli import common, run_cli


@pytest.fixture
def mixed(world, tmp_path):
    """8 readable photos and 4 unreadable files: truncated, text, a FIFO and an empty file."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in sorted((world / "real_test").glob("*.jpg"))[:8]:
        (folder / p.name).write_bytes(p.read_bytes())
    data = (world / "real_test" / "cam_00000.jpg").read_bytes()
    (folder / "cam_00003_cut.jpg").write_bytes(data[: len(data) * 3 // 4])
    (folder / "notes.png").write_text("not an image")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").write_bytes(b"")
    return folder


def test_csv_rows_for_every_file_errors_included(world, oneclass_file, mixed, capsys, tmp_path):
    out = tmp_path / "scores.csv"
    code, _, err = run_cli(
        capsys, ["detect", mixed, "--detector", oneclass_file, "-o", out, "--chunk", "3", *common(world)]
    )
    assert code == 0, err
    with out.open() as f:
        rows = list(csv.DictReader(f))
    # list_images finds regular files only: the FIFO is not listed from a folder (given by name it is a row).
    assert len(rows) == 11 and [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    bad = {os.path.basename(r["path"]): r["error"] for r in rows if r["error"]}
    assert set(bad) == {"cam_00003_cut.jpg", "notes.png", "zero.jpg"}
    assert bad["zero.jpg"] == "empty file" and bad["notes.png"] == "not an image"
    assert bad["cam_00003_cut.jpg"].startswith("truncated or corrupt")
    det, _ = load_detector(oneclass_file)
    for r in rows:
        if not r["error"]:
            assert (r["label"] == "fake") == (float(r["score"]) < det.threshold)
    assert "partial: scored 8 images, skipped 3 (" in err and f"wrote {out}" in err


def test_json_lines_strict_and_named_special_files(world, oneclass_file, mixed, capsys, tmp_path):
    out = tmp_path / "scores.jsonl"
    argv = ["detect", mixed, mixed / "pipe.jpg", "--detector", oneclass_file, "-o", out, "--strict", *common(world)]
    code, _, err = run_cli(capsys, argv)
    assert code == 3, err  # --strict: "partial" in the exit status
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and rows[-1]["error"] == "not a regular file" and rows[-1]["score"] is None
    assert sum(r["error"] is None for r in rows) == 8


def test_nothing_readable_is_an_error(world, oneclass_file, mixed, capsys):
    code, _, err = run_cli(capsys, ["detect", mixed / "notes.png", "--detector", oneclass_file, *common(world)])
    assert code == 2 and "none of the 1 images could be read" in err and "notes.png: not an image" in err


def test_rows_are_written_as_each_chunk_is_scored(world, oneclass_file, mixed, capsys, tmp_path, monkeypatch):
    """Stopped during its second chunk, the output already holds the first chunk's rows."""
    import bfdkern.detect.features as features

    real = features.image_features
    calls = []

    def stop_on_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(features, "image_features", stop_on_second)
    out = tmp_path / "scores.csv"
    with pytest.raises(KeyboardInterrupt):
        run_cli(capsys, ["detect", mixed, "--detector", oneclass_file, "-o", out, "--chunk", "4", *common(world)])
    with out.open() as f:
        assert len(list(csv.DictReader(f))) == 4


def test_cuda_without_a_gpu_is_one_line(world, oneclass_file, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv = ["detect", world / "real_test", "--detector", oneclass_file, "--cache-dir", world / "cache"]
    code, _, err = run_cli(capsys, [*argv, "--quiet", "--device", "cuda"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--device cuda: " in err and ("no CUDA GPU" in err or "no GPU device is visible here" in err)


def test_shared_data_broken_files_are_rows(world, oneclass_file, shared_data, capsys, tmp_path):
    """Real files nobody here made: EXIF-broken JPEGs (readable), a truncated Ultra HDR JPEG, and a camera photo
    cut short; every file a row, the broken ones with their reasons."""
    invalid = shared_data / "exif" / "exif-samples" / "jpg" / "invalid"
    edge = shared_data / "exif" / "pillow-edge"
    if not invalid.is_dir() or not edge.is_dir():
        pytest.skip("the shared EXIF samples are absent")
    photo = sorted((shared_data / "faces" / "faces_with_exif").glob("*.jpg"))[0]
    cut = tmp_path / "cut_photo.jpg"
    cut.write_bytes(photo.read_bytes()[:20_000])
    out = tmp_path / "scores.csv"
    code, _, err = run_cli(
        capsys, ["detect", invalid, edge, cut, "--detector", oneclass_file, "-o", out, *common(world)]
    )
    assert code == 0, err
    with out.open() as f:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(f)}
    assert all(not rows[p.name]["error"] for p in invalid.glob("*.jpg"))  # bad EXIF, good pixels
    assert rows["ultrahdr.jpg"]["error"].startswith("truncated or corrupt")
    assert rows["cut_photo.jpg"]["error"].startswith("truncated or corrupt")
    assert "partial: scored" in err and "skipped 2 (truncated or corrupt: 2)" in err
