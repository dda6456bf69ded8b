"""BatchStream: a stream rebuilt at a saved position continues with exactly the batches the original would
have drawn, across epoch ends, without touching the global torch random stream."""

import pytest
import torch

from bfdkern.data import FaceDataset, make_loaders
from bfdkern.tasks import blades_spec
from bfdkern.training import BatchStream

SPEC = blades_spec()


@pytest.fixture(scope="module")
def dataset(photos):
    return FaceDataset(photos, SPEC, size=16, seed=5)


@pytest.fixture(scope="module")
def loaders(dataset):
    return make_loaders(dataset, batch_size=16)  # paired: 24 photos x 2 = 3 batches an epoch


def _same(a, b):
    return torch.equal(a[0], b[0]) and torch.equal(a[1].nan_to_num(-1), b[1].nan_to_num(-1))


@pytest.mark.parametrize("paired", [True, False])
def test_rebuilt_stream_continues_exactly(dataset, paired):
    tr, _ = make_loaders(dataset, batch_size=16 if paired else 8, paired=paired)
    straight = BatchStream(tr)
    assert straight.batches_per_epoch == 3
    batches, positions = [], []
    for _ in range(7):
        batches.append(straight.next())
        positions.append(straight.position)
    assert positions[:4] == [(0, 1), (0, 2), (0, 3), (1, 1)]
    assert not _same(batches[0], batches[3])  # a new epoch: new order and new manipulations
    # Every photo appears in an epoch (twice when paired: as its original and manipulated).
    seen = torch.cat([b[0] for b in batches[:3]]).flatten(1)
    assert len({tuple(row[:64].tolist()) for row in seen}) == 48 if paired else 24
    for k in (1, 3, 5):  # mid-epoch, at an epoch end, mid-epoch of the next
        resumed = BatchStream(tr, *positions[k - 1])
        for j in range(k, 7):
            assert _same(resumed.next(), batches[j]), (k, j)


def test_streams_differ_and_leave_the_global_random_stream_alone(loaders):
    tr, val = loaders
    before = torch.get_rng_state()
    a, b = BatchStream(tr).next(), BatchStream(val).next()
    assert torch.equal(torch.get_rng_state(), before)
    assert not _same(a, b)


def test_bad_position(loaders):
    with pytest.raises(ValueError, match="outside an epoch of 3 batches"):
        BatchStream(loaders[0], epoch=0, batch=4)
    with pytest.raises(TypeError, match="make_loaders"):
        BatchStream(torch.utils.data.DataLoader(list(range(10)), batch_size=2))
