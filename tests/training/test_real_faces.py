"""A short pretrain on real face photographs with their camera EXIF (the shared data; skipped when absent):
real JPEGs of all sizes decoded, EXIF labels read, a few steps taken. (Face crops of these photos are tested
with the dataset; locating faces in all 53 costs ~20 s here.)"""

import numpy as np

from bfdkern.tasks import blades_spec
from bfdkern.training import PretrainConfig, pretrain, read_log

SPEC = blades_spec()


def test_short_pretrain_on_real_faces(shared_data, tmp_path):
    faces = shared_data / "faces" / "faces_with_exif"
    config = PretrainConfig(
        data=str(faces),
        epochs=1,
        batch_size=8,
        image_size=32,
        backbone="small",
        feature_dim=16,
        lr=1e-3,
        workers=0,
        device="cpu",
        max_steps=2,
        progress=False,
    )
    messages = []
    result = pretrain(config, tmp_path / "run", echo=messages.append, plots=False)
    assert result.status == "finished" and result.steps == 2
    assert result.images == 53 and not result.skipped
    log = read_log(tmp_path / "run")
    # Real EXIF labels reach the loss: the EXIF tasks have labels (a task without any would log exactly 0).
    for task in ("iso", "exposure_time", "make", "white_balance"):
        assert (log[f"loss_{task}"] > 0).all(), task
    assert np.isfinite([log[f"lambda_{t}"][-1] for t in SPEC.names]).all()
