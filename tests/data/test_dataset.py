"""FaceDataset and its batch streams: targets packed for the spec (EXIF labels kept for manipulated
versions), sampling ratios, determinism under a seed (with and without workers), unreadable images
skipped with a counted reason, manifests and real photos."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from bfdkern.data.dataset import FaceDataset, StreamSampler, make_loaders
from bfdkern.data.manipulations import KIND_PROBABILITIES, KINDS, REGIONS
from bfdkern.data.simulator import MAKES, read_labels, simulate_collection
from bfdkern.exif.vocab import CATEGORICAL_TAGS
from bfdkern.tasks import Task, TaskSpec, blades_spec

SPEC = blades_spec()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    simulate_collection(root, 40, seed=7, size=48, missing=0.1)
    return root


@pytest.fixture(scope="module")
def dataset(photos):
    return FaceDataset(photos, SPEC, size=32, seed=1)


def test_targets_carry_the_exif_labels_and_the_manipulation(dataset, photos):
    rows = {r["file"]: r for r in read_labels(photos)}
    canonical = {m.exif_make: m.name for m in MAKES}
    seen = set()
    for index in range(len(dataset)):
        for epoch in range(6):
            s = dataset.draw((index, 0, epoch))
            seen.add(s.kind)
            row = rows[s.path.rsplit("/", 1)[-1]]
            assert s.image.shape == (3, 32, 32) and s.targets.shape == (SPEC.num_targets,)
            t = s.targets
            for task in ("iso", "aperture", "exposure_time", "focal_length"):
                value = t[SPEC.target_columns(task)].item()
                if row[task]:
                    assert value == pytest.approx(float(row[task]), rel=1e-6), task
                else:
                    assert np.isnan(value), task
            make = t[SPEC.target_columns("make")].item()
            if row["make"]:
                assert make == CATEGORICAL_TAGS["make"].index(canonical[row["make"]])
            else:
                assert np.isnan(make)
            if row["white_balance"]:
                assert t[SPEC.target_columns("white_balance")].item() == int(row["white_balance"])
            assert t[SPEC.target_columns("manipulated")].item() == float(s.kind != "original")
            mouth, eye = t[SPEC.target_columns("region")].tolist()
            assert (mouth, eye) == (float("mouth" in REGIONS[s.kind]), float("eye" in REGIONS[s.kind]))
    assert seen == set(KINDS)


def test_sampling_ratios(dataset):
    counts = {k: 0 for k in KINDS}
    n = 0
    for epoch in range(25):
        for index in range(len(dataset)):
            counts[dataset.draw((index, 1, epoch)).kind] += 1
            n += 1
    observed = [counts[k] for k in KINDS]
    expected = [p * n for p in KIND_PROBABILITIES]
    assert chisquare(observed, expected).pvalue > 1e-3, observed
    assert abs(counts["original"] / n - 0.5) < 0.05


def test_deterministic_under_a_seed(photos, dataset):
    again = FaceDataset(photos, SPEC, size=32, seed=1)
    other = FaceDataset(photos, SPEC, size=32, seed=2)
    differ = 0
    keys = [(i, s, e) for i in (0, 5, 17) for s in (0, 1) for e in (0, 3)]
    for key in keys:
        a, b, c = dataset.draw(key), again.draw(key), other.draw(key)
        assert torch.equal(a.image, b.image) and torch.equal(a.targets.nan_to_num(-1), b.targets.nan_to_num(-1))
        differ += not torch.equal(a.image, c.image)
    assert differ >= len(keys) // 2


def _batches(loader, n):
    out = []
    for images, targets in loader:
        out.append((images, targets))
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("paired", [True, False])
def test_streams_are_independent_reproducible_and_worker_safe(dataset, paired):
    tr, val = make_loaders(dataset, batch_size=8, paired=paired)
    a_tr, a_val = _batches(tr, 3), _batches(val, 3)
    assert a_tr[0][0].shape == (8, 3, 32, 32) and a_tr[0][1].shape == (8, SPEC.num_targets)
    assert not torch.equal(a_tr[0][0], a_val[0][0])
    next_epoch = _batches(tr, 1)
    assert not torch.equal(next_epoch[0][0], a_tr[0][0])  # each pass is a new epoch
    tr.sampler.set_epoch(0)
    assert torch.equal(_batches(tr, 1)[0][0], a_tr[0][0])
    tr.sampler.set_epoch(0, start=8)  # resume after one batch
    assert torch.equal(_batches(tr, 1)[0][0], a_tr[1][0])
    # Two worker processes deliver exactly the same batches.
    w_tr, w_val = make_loaders(dataset, batch_size=8, num_workers=2, paired=paired)
    for (x, y), (wx, wy) in zip(a_tr + a_val, _batches(w_tr, 3) + _batches(w_val, 3)):
        assert torch.equal(x, wx) and torch.equal(y.nan_to_num(-1), wy.nan_to_num(-1))


def test_val_fraction_gives_disjoint_images(dataset):
    tr, val = make_loaders(dataset, batch_size=4, val_fraction=0.25, paired=False)
    a, b = set(tr.sampler.indices.tolist()), set(val.sampler.indices.tolist())
    assert not a & b and len(a | b) == len(dataset) and len(b) == 10
    with pytest.raises(ValueError, match="fewer than one batch of 128"):
        make_loaders(dataset, batch_size=128)
    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        make_loaders(dataset, batch_size=64, paired=False)
    with pytest.raises(ValueError, match="even batch size"):
        make_loaders(dataset, batch_size=5)


def test_sampler_epochs():
    sampler = StreamSampler(range(10), seed=0, stream=1, paired=False)
    first, second = list(sampler), list(sampler)
    assert sorted(i for i, _, _ in first) == list(range(10)) and {e for _, _, e in second} == {1}
    assert [i for i, _, _ in first] != [i for i, _, _ in second]
    paired = StreamSampler(range(10), seed=0, stream=1, paired=True)
    keys = list(paired)
    assert paired.keys_per_epoch == 20 and sampler.keys_per_epoch == 10
    assert len(keys) == 20 and [k[0] for k in keys[0::2]] == [k[0] for k in keys[1::2]] == [k[0] for k in first]
    assert [k[3] for k in keys] == [0, 1] * 10
    paired.set_epoch(0, start=3)
    assert list(paired) == keys[3:]


def test_paired_batches_hold_each_photo_both_ways(dataset):
    tr, _ = make_loaders(dataset, batch_size=8)
    kinds = {k: 0 for k in KINDS}
    for _ in range(6):
        keys = list(tr.sampler)  # the next epoch each time
        for a, b in zip(keys[0::2], keys[1::2]):
            sa, sb = dataset.draw(a), dataset.draw(b)
            assert sa.index == sb.index and sa.kind == "original" and sb.kind != "original"
            assert torch.equal(sa.targets[:9].nan_to_num(-1), sb.targets[:9].nan_to_num(-1))  # same EXIF labels
            kinds[sa.kind] += 1
            kinds[sb.kind] += 1
    n = sum(kinds.values())
    observed = [kinds[k] for k in KINDS]
    assert chisquare(observed, [p * n for p in KIND_PROBABILITIES]).pvalue > 1e-3, observed


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    simulate_collection(tmp_path, 6, seed=1, size=32)
    good = (tmp_path / "cam_00000.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "notes.jpg").write_text("not a photo")
    (tmp_path / "empty.png").write_bytes(b"")
    ds = FaceDataset(tmp_path, SPEC, size=32)
    assert len(ds) == 6
    assert ds.skipped == {"truncated or corrupt": 1, "not an image": 1, "empty file": 1}
    assert {p.rsplit("/", 1)[-1] for p, _ in ds.skipped_files} == {"truncated.jpg", "notes.jpg", "empty.png"}
    assert "3 skipped" in ds.summary()
    tr, _ = make_loaders(ds, batch_size=4)
    assert len(_batches(tr, 2)) == 2  # the run goes on
    with pytest.raises(ValueError, match="no usable images"):
        FaceDataset([tmp_path / "notes.jpg"], SPEC)


def test_manifest_source_gives_the_folder_targets(photos, tmp_path):
    from bfdkern.exif import build_manifest

    manifest = tmp_path / "photos.sqlite"
    build_manifest(photos, manifest, workers=0, progress=False)
    from_manifest = FaceDataset(manifest, SPEC, size=32, seed=1)
    from_folder = FaceDataset(photos, SPEC, size=32, seed=1)
    assert [i.path for i in from_manifest.items] == [i.path for i in from_folder.items]
    assert torch.equal(from_manifest.exif_targets.nan_to_num(-1), from_folder.exif_targets.nan_to_num(-1))


def test_custom_spec_and_bad_arguments(photos):
    spec = TaskSpec(
        (Task("iso", "ordinal", 1), Task("manipulated", "binary", 2, outer=True), Task("blur", "ordinal", 1))
    )
    ds = FaceDataset(photos, spec, size=16, manipulate=False)
    image, targets = ds[0]
    assert image.shape == (3, 16, 16) and targets[1] == 0 and torch.isnan(targets[2])
    with pytest.raises(ValueError, match="paired batches need a dataset that manipulates"):
        make_loaders(ds, batch_size=4)
    with pytest.raises(KeyError, match="role 0/1"):
        ds.draw((0, 0, 0, 2))
    with pytest.raises(ValueError, match="probabilities must be 5 non-negative numbers"):
        FaceDataset(photos, SPEC, probabilities=(0.5, 0.5))
    with pytest.raises(FileNotFoundError, match="no such manifest or folder"):
        FaceDataset(photos / "nowhere", SPEC)


def test_real_photos_with_face_crops(shared_data):
    """OpenCV's Haar cascades find the faces in most real photos, and the dataset yields crops of them."""
    folder = shared_data / "faces" / "faces_with_exif"
    ds = FaceDataset(folder, SPEC, size=64, seed=0, face_crop=True)
    print(ds.summary())
    assert len(ds) >= 0.8 * len(list(folder.glob("*.jpg")))
    assert set(ds.skipped) <= {"no face found"}
    for item in ds.items:
        (w, h), p = item.ref_size, item.parts
        assert 0 <= p.face[0] < p.face[2] <= w + 1 and 0 <= p.face[1] < p.face[3] <= h + 1
        assert p.face[0] <= p.eyes[0] < p.eyes[2] <= p.face[2] and p.eyes[3] <= p.mouth[1] + 2
    labelled = ~torch.isnan(ds.exif_targets[:, SPEC.target_columns("iso")]).squeeze(1)
    assert labelled.float().mean() > 0.5
    tr, val = make_loaders(ds, batch_size=8)
    images, targets = next(iter(tr))
    assert images.shape == (8, 3, 64, 64) and torch.isfinite(images).all()
    assert (targets[:, SPEC.target_columns("manipulated")] >= 0).all()


def test_face_crop_from_known_boxes(tmp_path):
    from bfdkern.data.decode import decode_image as load_image
    from bfdkern.data.faces import LandmarkLocator
    from bfdkern.data.transforms import array_to_tensor, fit_square, square_box

    paths = simulate_collection(tmp_path, 4, seed=3, size=96)
    boxes = {r["file"]: [int(r[f"face_{c}"]) for c in ("x0", "y0", "x1", "y1")] for r in read_labels(tmp_path)}
    ds = FaceDataset(paths, SPEC, size=40, face_crop=True, locator=LandmarkLocator(boxes), manipulate=False)
    for i, path in enumerate(paths):
        crop = square_box(boxes[path.name], 1.3, 96, 96)
        expected = array_to_tensor(fit_square(load_image(path), 40, crop))
        assert torch.equal(ds[i][0], expected)


def test_hostile_exif_values_never_stop_the_dataset(tmp_path):
    """Long ASCII numbers in categorical and rational tags: the file keeps its usable labels, the rest are
    missing with a reason; nothing raises."""
    from tests.exif.test_hostile import _hostile_jpeg

    simulate_collection(tmp_path, 3, seed=2, size=32)
    (tmp_path / "hostile.jpg").write_bytes(_hostile_jpeg())
    ds = FaceDataset(tmp_path, SPEC, size=16)
    assert len(ds) == 4 and ds.exif_reasons["malformed"] >= 7
    hostile = [i for i, item in enumerate(ds.items) if item.path.endswith("hostile.jpg")][0]
    make = ds.exif_targets[hostile, SPEC.target_columns("make")].item()
    assert make == CATEGORICAL_TAGS["make"].index("Canon")
    assert torch.isnan(ds.exif_targets[hostile, SPEC.target_columns("metering_mode")]).all()


def test_vanishing_photos_warn_once_per_hundred_with_a_total(tmp_path):
    import warnings

    simulate_collection(tmp_path, 8, seed=4, size=32)
    ds = FaceDataset(tmp_path, SPEC, size=16)
    for item in ds.items[:6]:
        Path(item.path).unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(40):
            for index in range(8):
                ds.draw((index, 0, epoch))
    lines = [str(w.message) for w in caught]
    total = ds.vanished.total
    assert total == 40 * (6 + 5 + 4 + 3 + 2 + 1)  # each failed read: a deleted photo's draw tries the next one
    assert len(lines) == 1 + total // 100 and lines[0].startswith("1 image could not be read")
    assert "100 images could not be read" in lines[1] and "cam_" in lines[1]  # the last file is named
    tr, _ = make_loaders(ds, batch_size=4, num_workers=2, paired=False)  # counted across worker processes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _batches(tr, 2)
    assert ds.vanished.total > total
