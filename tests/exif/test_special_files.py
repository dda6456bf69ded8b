"""Special files: FIFOs, sockets, devices and links to them are refused with a reason everywhere (the
Python API included: nothing hangs, nothing is read without bound); `index` counts them."""

import os
import signal
import socket
from contextlib import closing

import pytest

from bfdkern.data import FaceDataset, UnreadableImage, load_image
from bfdkern.exif import ExifReadError, build_manifest, read_exif
from bfdkern.exif.reader import read_raw
from bfdkern.tasks import blades_spec
from tests.exif import photos


@pytest.fixture
def specials(tmp_path):
    """A folder with two photos and one of each special kind, all named like images."""
    root = tmp_path / "photos"
    photos.write_photo(root / "a.jpg")
    photos.write_photo(root / "b.jpg")
    os.mkfifo(root / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.jpg"))
    os.symlink("/dev/zero", root / "zero.jpg")
    os.symlink(root / "nowhere.jpg", root / "broken.jpg")
    os.symlink(root / "a.jpg", root / "link_to_a.jpg")  # a link to a regular file is a file
    with closing(sock):
        yield root


@pytest.fixture(autouse=True)
def no_hang():
    """A hang fails the test instead of stalling the suite."""

    def fail(signum, frame):
        raise TimeoutError("hung on a special file")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("name", ["fifo.jpg", "sock.jpg", "zero.jpg"])
def test_read_exif_and_load_image_refuse_special_files(specials, name):
    path = specials / name
    with pytest.raises(ExifReadError, match="not a regular file") as info:
        read_exif(path)
    assert info.value.reason == "not_a_regular_file" and name in str(info.value)
    with pytest.raises(ExifReadError, match="not a regular file"):
        read_raw(path, "pillow")
    with pytest.raises(UnreadableImage, match="not a regular file") as info:
        load_image(path)
    assert info.value.reason == "not a regular file"


def test_face_dataset_skips_special_files_with_a_reason(specials):
    paths = [specials / n for n in ("a.jpg", "fifo.jpg", "zero.jpg", "sock.jpg", "b.jpg")]
    ds = FaceDataset(paths, blades_spec(), size=16)
    assert len(ds) == 2 and ds.skipped == {"not a regular file": 3}
    assert ds.exif_reasons["not_a_regular_file"] == 3
    assert {p.rsplit("/", 1)[-1] for p, _ in ds.skipped_files} == {"fifo.jpg", "zero.jpg", "sock.jpg"}


def test_index_counts_special_files(specials, tmp_path):
    report = build_manifest(specials, tmp_path / "m.sqlite", workers=2, progress=False)
    assert report.indexed == 3 and report.labelled == 3  # a.jpg, b.jpg, link_to_a.jpg
    assert report.special == {"FIFO": 1, "socket": 1, "device": 1, "broken link": 1}
    assert "not regular files, not read: 1 FIFO, 1 socket, 1 device, 1 broken link" in str(report)
