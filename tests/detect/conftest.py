"""Detection tests run torch and BLAS on one thread: their arrays are small, and on a shared 2-core machine
two threads spinning at every small op made an MLP fit 20x and a 768x768 Cholesky 30x slower. The command
tests share one small world: simulated camera photos (JPEG), camera-less faces (PNG), two encoders."""

import pytest
import torch

from bfdkern.cli import main
from tests.detect.cli import common
from tests.helpers import one_thread


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="package")
def world(tmp_path_factory):
    from bfdkern.data.simulator import simulate_collection, simulate_uncamera
    from bfdkern.models import BladesModel, save_model
    from bfdkern.tasks import blades_spec

    root = tmp_path_factory.mktemp("detect_cli")
    simulate_collection(root / "real", 24, seed=0, size=32)
    simulate_collection(root / "real_test", 12, seed=1, size=32)
    simulate_collection(root / "real_b", 10, seed=4, size=32)
    simulate_uncamera(root / "fake", 16, seed=2, size=32)
    simulate_uncamera(root / "fake2", 12, seed=3, size=32, kinds=("clean",))
    for seed, name in ((0, "run"), (1, "other_run")):
        torch.manual_seed(seed)
        model = BladesModel(blades_spec(), backbone="small", feature_dim=768)
        save_model(root / name / "encoder.pt", model, extra={"pretrain_config": {"image_size": 32, "face_crop": False}})
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="package")
def oneclass_file(world):
    path = world / "oc.npz"
    argv = ["fit-oneclass", "--encoder", world / "run", "--real", world / "real", "-o", path, "--components", "2"]
    assert main([str(a) for a in [*argv, *common(world)]]) == 0
    return path
