"""Face locators: template positions match the simulator's faces, landmarks give boxes around the
points they came from. (Haar on real photos: tests/data/test_dataset.py::test_real_photos_with_face_crops.)"""

import json
import pickle

import numpy as np
import pytest

from bfdkern.data.decode import decode_image as load_image
from bfdkern.data.faces import HaarFaceLocator, LandmarkLocator, TemplateLocator, parts_from_landmarks
from bfdkern.data.simulator import read_labels, simulate_collection


def _inside(points, box):
    x0, y0, x1, y1 = box
    return bool(((points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)).all())


def test_template_matches_the_simulated_faces(tmp_path):
    paths = simulate_collection(tmp_path, 10, seed=2, size=64)
    rows = read_labels(tmp_path)
    locator = TemplateLocator()
    for path, row in zip(paths, rows):
        (found,) = locator.locate(np.asarray(load_image(path)))
        for name, box in (("face", found.face), ("eyes", found.eyes), ("mouth", found.mouth)):
            truth = [int(row[f"{name}_{c}"]) for c in ("x0", "y0", "x1", "y1")]
            assert np.abs(np.subtract(box, truth)).max() <= 3, (path.name, name, box, truth)


def test_template_rejects_bad_fractions():
    with pytest.raises(ValueError, match="template mouth box"):
        TemplateLocator(mouth=(0.6, 0.5, 0.4, 0.7))


def _ibug68(rng):
    """A plausible 68-point face around (100, 100) with some noise."""
    jaw = np.stack([np.linspace(50, 150, 17), 100 + 45 * np.sin(np.linspace(0, np.pi, 17))], 1)
    brows = np.stack([np.r_[np.linspace(60, 90, 5), np.linspace(110, 140, 5)], np.full(10, 70)], 1)
    nose = np.stack(
        [np.r_[np.full(4, 100), np.linspace(90, 110, 5)], np.r_[np.linspace(80, 105, 4), np.full(5, 110)]], 1
    )
    eye = lambda cx: np.stack(
        [
            cx + 12 * np.cos(np.linspace(0, 2 * np.pi, 6, endpoint=False)),
            85 + 5 * np.sin(np.linspace(0, 2 * np.pi, 6, endpoint=False)),
        ],
        1,
    )
    mouth = np.stack(
        [
            100 + 22 * np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
            125 + 8 * np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
        ],
        1,
    )
    pts = np.concatenate([jaw, brows, nose, eye(75), eye(125), mouth])
    return pts + rng.normal(0, 0.5, pts.shape)


def test_parts_from_68_and_5_landmarks():
    pts = _ibug68(np.random.default_rng(0))
    parts = parts_from_landmarks(pts)
    assert _inside(pts[36:48], parts.eyes) and _inside(pts[48:68], parts.mouth) and _inside(pts, parts.face)
    five = np.array([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
    p5 = parts_from_landmarks(five)
    assert _inside(five[:2], p5.eyes) and _inside(five[3:], p5.mouth) and _inside(five, p5.face)
    assert p5.eyes[3] <= p5.mouth[1]  # eyes above the mouth
    with pytest.raises(ValueError, match=r"landmarks must be finite \[68, 2\] or \[5, 2\]"):
        parts_from_landmarks(np.zeros((7, 2)))


def test_landmark_locator_lookup(tmp_path):
    pts = _ibug68(np.random.default_rng(1))
    (tmp_path / "lm.json").write_text(
        json.dumps({"a.jpg": pts.tolist(), "b.jpg": [pts.tolist(), (pts * 0.5).tolist()]})
    )
    locator = LandmarkLocator.from_json(tmp_path / "lm.json")
    image = np.zeros((200, 200, 3), np.uint8)
    assert len(locator.locate(image, "/photos/a.jpg")) == 1
    two = locator.locate(image, "b.jpg")
    assert len(two) == 2 and two[0].face[2] - two[0].face[0] > two[1].face[2] - two[1].face[0]  # largest first
    assert locator.locate(image, "c.jpg") == [] and locator.locate(image) == []
    boxes = LandmarkLocator({"c.jpg": [10, 20, 110, 140], "d.jpg": [[0, 0, 50, 50], [10, 10, 200, 180]]})
    (c,) = boxes.locate(image, "c.jpg")
    assert c.face == (10, 20, 110, 140) and 10 <= c.eyes[0] < c.eyes[2] <= 110 and c.eyes[3] <= c.mouth[1]
    assert [f.face for f in boxes.locate(image, "d.jpg")] == [(10, 10, 200, 180), (0, 0, 50, 50)]
    with pytest.raises(ValueError, match=r"e\.jpg: face boxes must be finite"):
        LandmarkLocator({"e.jpg": [10, 10, 5, 20]})
    (tmp_path / "bad.json").write_text(json.dumps({"a.jpg": [[1, 2, 3]]}))
    with pytest.raises(ValueError, match=r"bad\.json: a\.jpg: landmarks must be"):
        LandmarkLocator.from_json(tmp_path / "bad.json")


def test_haar_locator_pickles_for_worker_processes():
    locator = HaarFaceLocator()
    locator.locate(np.zeros((64, 64, 3), np.uint8))  # loads the cascades
    clone = pickle.loads(pickle.dumps(locator))
    assert clone.locate(np.zeros((64, 64, 3), np.uint8)) == []


def test_mediapipe_finds_the_faces_of_real_photos(shared_data):
    """MediaPipe's bundled BlazeFace (optional package): a face box and eye/mouth boxes inside it, on real
    photos; 'auto' picks it when it is installed."""
    pytest.importorskip("mediapipe")
    from bfdkern.data.decode import decode_image as load_image
    from bfdkern.data.faces import MediaPipeFaceLocator, detector_id, face_detector

    assert isinstance(face_detector("auto"), MediaPipeFaceLocator)
    locator = MediaPipeFaceLocator()
    assert detector_id(locator).startswith("mediapipe 0.")
    files = sorted((shared_data / "faces" / "faces_with_exif").glob("*.jpg"))[:12]
    found = 0
    for path in files:
        image = np.asarray(load_image(path, draft=(640, 640)))
        faces = locator.locate(image)
        if faces:
            found += 1
            f, e, m = faces[0].face, faces[0].eyes, faces[0].mouth
            assert f[0] <= e[0] < e[2] <= f[2] + 2 and e[3] <= m[1] + 2 and m[3] <= f[3] + f[3] // 5
    assert found >= 10


def test_the_command_line_names_every_detector():
    from bfdkern.data.choices import FACE_DETECTOR_NAMES
    from bfdkern.data.faces import FACE_DETECTORS, HaarFaceLocator, face_detector

    assert set(FACE_DETECTOR_NAMES) == {"auto", *FACE_DETECTORS}
    assert isinstance(face_detector("haar"), HaarFaceLocator)
    with pytest.raises(ValueError, match="unknown face detector 'yolo'"):
        face_detector("yolo")
