"""Labels -> the targets layout of the task spec; quantile binning."""

import math
import random

import pytest
import torch

from bfdkern.exif import QuantileBins, labels_of, parse_tags, targets
from bfdkern.exif.vocab import MAKE_CLASSES, ORDINAL_TAGS
from bfdkern.tasks import Task, TaskSpec, blades_spec
from tests.exif.photos import CAMERA_LABELS


def _random_labels(rng: random.Random) -> dict:
    """A label dict with random values and random missing tasks, drawn fresh."""
    spec = blades_spec()
    row = {}
    for name in ORDINAL_TAGS:
        row[name] = None if rng.random() < 0.3 else rng.choice([0.5, 1.0, 2.8, 100.0, 1 / 60])
    for name in ("make", "metering_mode", "exposure_mode", "white_balance", "exposure_program"):
        row[name] = None if rng.random() < 0.3 else rng.choice(spec[name].classes)
    return row


def test_targets_layout_matches_the_spec():
    spec = blades_spec()
    rng = random.Random(torch.seed())
    rows = [_random_labels(rng) for _ in range(32)] + [CAMERA_LABELS]
    t = targets(rows, spec)
    assert t.shape == (len(rows), spec.num_targets) and t.dtype == torch.float32
    for i, row in enumerate(rows):
        for k, task in enumerate(spec.tasks):
            got = t[i, spec.target_offsets[k]].item()
            want = row.get(task.name)
            if want is None:
                assert math.isnan(got), (task.name, row)
            elif task.kind == "ordinal":
                assert got == pytest.approx(want)
            else:
                assert task.classes[int(got)] == want
    # The non-EXIF tasks (manipulated, region) are never filled from EXIF.
    assert torch.isnan(t[:, spec.target_columns("manipulated")]).all()
    assert torch.isnan(t[:, spec.target_columns("region")]).all()


def test_parsed_photo_to_targets_row():
    values = parse_tags({"FNumber": "28/10", "ExposureTime": "1/250", "Make": "SONY", "WhiteBalance": "2"})
    labels, reasons = labels_of(values)
    spec = blades_spec()
    row = targets([labels], spec, dtype=torch.float64)[0]
    assert row[spec.index("aperture")] == 2.8
    assert row[spec.index("exposure_time")] == 1 / 250
    assert row[spec.target_offsets[spec.index("make")]] == MAKE_CLASSES.index("Sony")
    assert math.isnan(row[spec.target_offsets[spec.index("white_balance")]])
    assert reasons["white_balance"] == "nonstandard_code" and reasons["iso"] == "absent"


def test_smaller_vocabulary_folds_into_others_and_subset_specs():
    spec = TaskSpec((Task("make", "categorical", 3, ("Canon", "Nikon", "others")), Task("iso", "ordinal", 1)))
    t = targets([{"make": "Sony", "iso": 200.0}, {"make": "Nikon"}], spec)
    assert t[:, 0].tolist() == [2.0, 1.0]
    assert t[0, 1] == 200.0 and math.isnan(t[1, 1])
    no_others = TaskSpec((Task("make", "categorical", 2, ("Canon", "Nikon")),))
    assert math.isnan(targets([{"make": "Sony"}], no_others)[0, 0])
    sub = blades_spec().subset(["iso", "white_balance"])
    assert targets([{"iso": 800.0, "white_balance": "manual"}], sub).tolist() == [[800.0, 1.0]]


def test_kind_mismatch_is_reported():
    spec = TaskSpec((Task("iso", "categorical", 2, ("low", "high")),))
    with pytest.raises(ValueError, match="'iso' is ordinal in EXIF but categorical in the spec"):
        targets([{"iso": 100.0}], spec)


def test_quantile_bins_keep_order_and_balance():
    rng = random.Random(torch.seed())
    values = [rng.lognormvariate(0, 2) for _ in range(4000)]
    bins = QuantileBins.fit({"exposure_time": values, "iso": [100.0] * 50 + [200.0] * 50}, levels=4)
    levels = [bins.level("exposure_time", v) for v in values]
    counts = [levels.count(float(level)) for level in range(4)]
    assert all(900 <= c <= 1100 for c in counts), counts
    order = sorted(range(len(values)), key=values.__getitem__)
    assert all(levels[a] <= levels[b] for a, b in zip(order, order[1:])), "binning must keep the order"
    assert bins.level("iso", 100.0) < bins.level("iso", 200.0)
    assert math.isnan(bins.level("iso", math.nan)) and bins.level("focal_length", 35.0) == 35.0
    again = QuantileBins.from_dict(bins.to_dict())
    assert [again.level("exposure_time", v) for v in values[:50]] == levels[:50]
    t = targets([{"exposure_time": v} for v in values[:20]], blades_spec(), bins)
    assert t[:, blades_spec().index("exposure_time")].tolist() == levels[:20]


def test_quantile_bins_reject_bad_input():
    with pytest.raises(ValueError, match="at least 2 levels"):
        QuantileBins.fit({"iso": [1.0]}, levels=1)
    with pytest.raises(ValueError, match="no values"):
        QuantileBins.fit({"iso": [None, float("nan")]}, levels=3)
    with pytest.raises(ValueError, match="ascending"):
        QuantileBins({"iso": [3.0, 1.0]})
