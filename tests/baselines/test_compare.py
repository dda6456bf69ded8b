"""One `bfdkern evaluate` call with several registered detectors: the same images, one comparison table."""

import csv

import torch
from torch import nn

from bfdkern import cli
from bfdkern.detect import list_images
from bfdkern.detect.baselines import CNNDetector
from bfdkern.detect.fitting import fit_frozen

NO_CACHE = {"cache_dir": None, "num_workers": 1, "progress": False, "device": "cpu"}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_several_detectors_one_table(eval_sets, tmp_path, capsys):
    torch.manual_seed(0)
    torch.jit.script(Tiny()).save(str(tmp_path / "tiny.pt"))
    fit = list_images(eval_sets / "fit")
    oc = tmp_path / "oc.npz"
    fit_frozen(
        f"torchscript:{tmp_path / 'tiny.pt'}",
        fit,
        oc,
        size=32,
        detector_options={"n_components": 1},
        feature_options=NO_CACHE,
    )
    fake = list_images(eval_sets / "fake")[:6]
    cnnd = CNNDetector(arch="resnet18", size=32).fit(fit[:6], fake, epochs=1, batch_size=6, progress=False)
    cnnd.save(tmp_path / "cnnd.pt")

    out = tmp_path / "compare"
    common = ["--real", str(eval_sets / "real"), "--fake", f"nocam={eval_sets / 'fake'}", "--out", str(out)]
    common += ["--no-cache", "--quiet", "--device", "cpu"]
    detectors = ["--detector", f"frozen-oc={oc}", "--detector", str(tmp_path / "cnnd.pt"), "--detector", "hu21"]
    assert cli.main(["evaluate", *detectors, *common]) == 0
    with open(out / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["detector"] for r in rows] == ["frozen-oc", "cnnd", "hu21"]
    assert [r["positive_class"] for r in rows] == ["real", "fake", "real"]
    for r in rows:
        assert 0 <= float(r["auc"]) <= 1 and float(r["auc_nocam"]) == float(r["auc"])
        assert (out / r["detector"] / "results.csv").is_file()
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    assert cli.main(["evaluate", "--detector", "hu21", "--detector", "hu21", *common]) == 2
    assert "give each a name" in capsys.readouterr().err
    assert cli.main(["evaluate", "--detector", "hu21", "--detector", str(tmp_path / "nope.pt"), *common]) == 2
    assert "nope.pt: no such detector file" in capsys.readouterr().err
