"""Face boxes in the manifest: FDF's metainfo boxes and keypoints drive the 1.3x crop and the mouth and eye
boxes; faces are found once, by the indexing workers, and never again; rank 0 alone writes."""

import json
import sqlite3
import threading
import time

import numpy as np
import pytest

from bfdkern.data import FaceDataset, HaarFaceLocator, TemplateLocator
from bfdkern.data.face_index import find_faces, import_boxes, mark_prepared, wait_until_prepared
from bfdkern.data.faces import FaceParts, parts_from_fdf
from bfdkern.data.simulator import simulate_collection
from bfdkern.data.transforms import square_box
from bfdkern.exif import build_manifest
from bfdkern.exif.manifest import import_table
from bfdkern.exif.vocab import BLADES_OFFICIAL_CLASSES
from bfdkern.tasks import blades_spec
from tests.data.fdf import SIDE, face_geometry, write_fdf

OFFICIAL = blades_spec(classes=BLADES_OFFICIAL_CLASSES)


@pytest.fixture
def fdf(tmp_path):
    files = write_fdf(tmp_path / "fdf", n=8)
    manifest = tmp_path / "fdf.sqlite"
    import_table(files["images"], manifest, files["labels"], progress=False)
    report = import_boxes(manifest, files["metainfo"])
    assert report.found == 8 and not report.rejected
    return files, manifest


def _expected(i: int, size: int):
    """The crop square (pixels of the 128 x 128 image) and the eye and mouth boxes (crop pixels), worked out
    from the FDF geometry by hand: the mouth centre is the nose mirrored away from the eyes' midpoint."""
    g = face_geometry(i)
    x0, y0, x1, y1 = (round(v * SIDE) for v in g["bounding_box"])
    side = round(1.3 * max(x1 - x0, y1 - y0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx = min(max(round(cx - side / 2), 0), SIDE - side)
    by = min(max(round(cy - side / 2), 0), SIDE - side)
    nose, r_eye, l_eye = (np.array(p) * SIDE for p in g["landmark"][:3])
    iod = np.linalg.norm(l_eye - r_eye)
    mouth = nose + (nose - (r_eye + l_eye) / 2)
    eyes = (r_eye[0] - 0.35 * iod, r_eye[1] - 0.22 * iod, l_eye[0] + 0.35 * iod, l_eye[1] + 0.22 * iod)
    mouth_box = (mouth[0] - 0.55 * iod, mouth[1] - 0.3 * iod, mouth[0] + 0.55 * iod, mouth[1] + 0.3 * iod)
    scale = size / side

    def crop(b):
        return tuple((b[k] - (bx if k % 2 == 0 else by)) * scale for k in range(4))

    return (bx, by, bx + side, by + side), crop(eyes), crop(mouth_box)


def test_fdf_boxes_and_keypoints_drive_the_crop_and_the_parts(fdf):
    _, manifest = fdf
    ds = FaceDataset(manifest, OFFICIAL, size=64, face_crop=True, manipulate=False)
    assert len(ds) == 8 and ds.detections == 0  # no detector ran: the table's boxes are used
    for i in range(8):
        sample = ds.draw(i)
        box, eyes, mouth = _expected(int(sample.path.rsplit("/", 1)[-1].split(".")[0]), 64)
        assert sample.image_size == (SIDE, SIDE) and sample.box == box
        assert sample.parts.eyes == pytest.approx(eyes, abs=1.01) and sample.parts.mouth == pytest.approx(
            mouth, abs=1.01
        )
        assert sample.parts.mouth[1] > sample.parts.eyes[3]  # the mouth sits below the eyes


def test_the_official_json_labels_keep_their_classes(fdf):
    files, manifest = fdf
    ds = FaceDataset(manifest, OFFICIAL, size=32)
    make = OFFICIAL.target_columns("make")
    by_id = {int(p.rsplit("/", 1)[-1].split(".")[0]): i for i, p in enumerate(ds.paths)}
    for image_id, index in by_id.items():
        assert ds.exif_targets[index, make].item() == image_id % 10  # cls_label as given
        assert ds.exif_targets[index, OFFICIAL.target_columns("iso")].item() == image_id % 3  # the level
    with pytest.raises(ValueError, match="make labels name the classes .*Nikon.*Apple.*blades_spec\\(classes="):
        FaceDataset(manifest, blades_spec(), size=32)


def test_parts_without_keypoints_and_bad_boxes(tmp_path, fdf):
    files, manifest = fdf
    plain = parts_from_fdf([0.2, 0.2, 0.6, 0.8])
    assert plain[:4] == (0.2, 0.2, 0.6, 0.8) and plain[5] < plain[9]  # eye band above the mouth
    with pytest.raises(ValueError, match="x0 < x1"):
        parts_from_fdf([0.6, 0.2, 0.2, 0.8])
    meta = json.loads(files["metainfo"].read_text())
    meta["3"]["bounding_box"] = [0.5, 0.5, 0.4, 0.9]
    meta["4"] = "nonsense"
    bad = tmp_path / "bad_meta.json"
    bad.write_text(json.dumps(meta))
    report = import_boxes(manifest, bad)
    assert report.found == 6 and report.rejected == {"bad_box": 1, "bad_row": 1}
    ds = FaceDataset(manifest, OFFICIAL, size=32, face_crop=True, locator=TemplateLocator())  # no detector
    assert len(ds) == 6 and ds.skipped == {"no face (not looked for)": 2}


class CountingLocator(HaarFaceLocator):
    """A detector that 'finds' one fixed face and counts its calls in a file (workers are processes)."""

    log = None

    def locate(self, image, source=None):
        with open(self.log, "a") as fh:
            fh.write(f"{source}\n")
        h, w = image.shape[:2]
        return [
            FaceParts(
                (w // 4, h // 4, 3 * w // 4, 3 * h // 4),
                (w // 3, h // 3, 2 * w // 3, h // 2),
                (w // 3, 3 * h // 5, 2 * w // 3, 7 * h // 10),
            )
        ]


def test_faces_are_found_once_in_workers_and_read_back(tmp_path):
    folder = tmp_path / "photos"
    simulate_collection(folder, 10, seed=5, size=48)
    locator = CountingLocator()
    locator.log = tmp_path / "calls.txt"
    first = FaceDataset(folder, blades_spec(), size=32, face_crop=True, locator=locator, index_workers=2)
    calls = locator.log.read_text().splitlines()
    assert first.detections == 10 and len(calls) == 10 and len(set(calls)) == 10
    again = FaceDataset(folder, blades_spec(), size=32, face_crop=True, locator=locator, index_workers=2)
    assert again.detections == 0 and len(locator.log.read_text().splitlines()) == 10  # resume: 0 re-detections
    assert again.paths == first.paths and np.array_equal(again.parts, first.parts)
    s = again.draw(3)
    assert s.box == square_box((12, 12, 36, 36), 1.3, 48, 48)  # the stored box, enlarged 1.3x
    # A changed file is looked at again, alone.
    changed = folder / first.paths[0].rsplit("/", 1)[-1]
    changed.write_bytes(changed.read_bytes())
    import os

    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = FaceDataset(folder, blades_spec(), size=32, face_crop=True, locator=locator, index_workers=0)
    assert third.detections == 1


def test_other_ranks_wait_for_rank_0(tmp_path):
    folder = tmp_path / "photos"
    simulate_collection(folder, 3, seed=1, size=32)
    manifest = tmp_path / "m.sqlite"
    build_manifest(folder, manifest, workers=0, progress=False)
    want = {"folder": None, "boxes": None, "detector": "x", "token": "job-1"}
    mark_prepared(manifest, dict(want, token="an earlier job"))
    done = []

    def rank_1():
        wait_until_prepared(manifest, want, poll_s=0.05)
        done.append(time.monotonic())

    waiter = threading.Thread(target=rank_1)
    waiter.start()
    time.sleep(0.5)
    assert not done  # an earlier job's mark does not release it
    written = time.monotonic()
    mark_prepared(manifest, want)
    waiter.join(10)
    assert done and done[0] >= written


def test_find_faces_counts_and_keeps_table_boxes(fdf, tmp_path):
    _, manifest = fdf
    locator = CountingLocator()
    locator.log = tmp_path / "calls.txt"
    report = find_faces(manifest, locator, workers=0, progress=False)
    assert report.detections == 0 and report.known == 8  # FDF's boxes are kept, nothing detected
    with sqlite3.connect(manifest) as db:
        assert {s for (s,) in db.execute("SELECT DISTINCT source FROM faces")} == {"table:fdf:fdf_metainfo.json"}


class ThreadCountLocator(HaarFaceLocator):
    """The real Haar cascade, which also writes the OpenCV thread count it ran with to a file."""

    log = None

    def locate(self, image, source=None):
        import cv2

        with open(self.log, "a") as fh:
            fh.write(f"{cv2.getNumThreads()}\n")
        return super().locate(image, source=source)


def test_face_workers_run_opencv_on_one_thread_each(tmp_path):
    """Each worker is one core's share (OpenCV's cascade would otherwise run on every core in every
    worker); the thread count is set before the workers fork, since changing it inside a forked child
    hangs once the parent has used OpenCV's pool, and the parent's count comes back afterwards."""
    cv2 = pytest.importorskip("cv2")
    if cv2.getNumThreads() < 2:
        pytest.skip("OpenCV runs on one thread here already: the workers' count could not be told apart")
    folder = tmp_path / "photos"
    simulate_collection(folder, 8, seed=3, size=64)
    manifest = tmp_path / "m.sqlite"
    build_manifest(folder, manifest, workers=0, progress=False)
    before = cv2.getNumThreads()
    locator = ThreadCountLocator()
    locator.log = tmp_path / "threads.txt"
    find_faces(manifest, locator, workers=0, progress=False)  # the parent's pool is in use from here
    serial = locator.log.read_text().split()
    locator.log.unlink()
    report = find_faces(manifest, locator, workers=2, progress=False, redo=True, timeout_s=60)
    assert report.detections == 8 and locator.log.read_text().split() == ["1"] * 8
    assert serial == [str(before)] * 8 and cv2.getNumThreads() == before
