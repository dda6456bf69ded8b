"""Training as the paper does, on an FDF-shaped collection made here: labels from the official BLADES JSON,
face boxes and keypoints from fdf_metainfo.json, pretrain a few steps with the 1.3x crops; the heads follow
the JSON's classes and nothing is detected. Option errors fail fast and leave no run folder behind."""

import json
import time

import pytest

from bfdkern import cli
from bfdkern.exif.vocab import BLADES_OFFICIAL_CLASSES
from bfdkern.training import PretrainConfig
from bfdkern.training.run import Pretraining
from tests.data.fdf import write_fdf
from tests.data.test_face_index import _expected
from tests.training.test_command import SMALL

FAST = [a if a != "16" or SMALL[i - 1] != "--batch-size" else "8" for i, a in enumerate(SMALL)]


def test_pretrain_on_fdf_uses_its_boxes_keypoints_and_classes(tmp_path, capsys):
    files = write_fdf(tmp_path / "fdf", n=8)
    manifest, run = tmp_path / "fdf.sqlite", tmp_path / "run"
    index = ["index", str(files["images"]), "-o", str(manifest), "--table", str(files["labels"])]
    assert cli.main([*index, "--boxes", str(files["metainfo"]), "--no-progress"]) == 0
    assert "8 with a face" in capsys.readouterr().out
    command = ["pretrain", "--data", str(manifest), "--out", str(run), "--face-crop", "--max-steps", "2", *FAST]
    assert cli.main(command) == 0
    out = capsys.readouterr().out
    assert "step 2 of" in out and "no face" not in out
    config = PretrainConfig.load(run)
    assert config.vocabulary == {t: list(c) for t, c in BLADES_OFFICIAL_CLASSES.items()}
    # The run continues from its folder; its dataset read the boxes back (no detector) and crops as FDF says.
    session = Pretraining(config.resumed_with({"max_steps": 3}), run, resume=True, echo=lambda m: None)
    assert session.dataset.detections == 0 and len(session.dataset) == 8
    assert session.spec["make"].classes == BLADES_OFFICIAL_CLASSES["make"]
    for i in range(8):
        sample = session.dataset.draw((i, 0, 0, 1))
        box, eyes, mouth = _expected(int(sample.path.rsplit("/", 1)[-1].split(".")[0]), config.image_size)
        assert sample.box == box
        assert sample.parts.eyes == pytest.approx(eyes, abs=1.01) and sample.parts.mouth == pytest.approx(
            mouth, abs=1.01
        )
    assert session.run(plots=False).steps == 3


@pytest.mark.parametrize(
    "options, message",
    [
        (["--batch-size", "5"], "even batch size"),
        (["--tasks", "iso,nosuch,manipulated"], "unknown task names"),
        (["--preset", "nosuch"], "nosuch"),
        (["--face-detector", "haar", "--boxes", "/nowhere/boxes.json"], "no such boxes table"),
        (["--device", "cuda:7"], "cuda"),
    ],
)
def test_option_errors_fail_fast_and_write_nothing(tmp_path, capsys, photos, options, message):
    run = tmp_path / "run"
    start = time.perf_counter()
    code = cli.main(["pretrain", "--data", str(photos), "--out", str(run), *options, "--quiet"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    if "--device" not in options:
        assert elapsed < 1.0, f"{elapsed:.2f} s: the check waited for the data"
    assert not run.exists()


def test_a_start_that_fails_on_its_data_leaves_the_folder_reusable(tmp_path, capsys, photos):
    empty, run = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    assert cli.main(["pretrain", "--data", str(empty), "--out", str(run), *FAST]) == 2
    assert "no image files" in capsys.readouterr().err
    assert not (run / "config.json").exists()
    assert cli.main(["pretrain", "--data", str(photos), "--out", str(run), "--max-steps", "1", *FAST]) == 0
    assert json.loads((run / "config.json").read_text())["data"] == str(photos)
