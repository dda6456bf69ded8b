"""One `bfdkern evaluate` call with several registered detectors (a frozen-feature mixture, CNND, Hu21): the
same images, methods as rows of one table, each detector's own folder, unreadable images skipped by all."""

import csv
import io

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
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for p in list_images(eval_sets / "fake")[6:]:
        (fakes / p.name).write_bytes(p.read_bytes())
    (fakes / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    out = tmp_path / "compare"
    common = ["--real", str(eval_sets / "real"), "--fake", f"nocam={fakes}", "--out", str(out)]
    common += ["--no-cache", "--quiet", "--device", "cpu", "--perturb", "jpeg=90"]
    detectors = ["--detector", f"frozen-oc={oc}", "--detector", str(tmp_path / "cnnd.pt"), "--detector", "hu21"]
    assert cli.main(["evaluate", *detectors, *common]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 (not an image: 1) of 19 images" in captured.err
    table = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [(r["perturbation"], r["method"]) for r in table] == [
        (p, m) for p in ("clean", "jpeg=90") for m in ("frozen-oc", "cnnd", "hu21")
    ]
    for name, positive in (("frozen-oc", "real"), ("cnnd", "fake"), ("hu21", "real")):
        with open(out / name / "results.csv") as f:
            rows = list(csv.DictReader(f))
        assert rows[0]["positive_class"] == positive and rows[0]["n_fake"] == "6" and rows[0]["n_real"] == "12"
        row = next(r for r in table if r["method"] == name and r["perturbation"] == "clean")
        assert float(row["nocam AUC"]) == round(100 * float(rows[0]["auc"]), 2)
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    assert cli.main(["evaluate", "--detector", "hu21", "--detector", "hu21", *common]) == 2
    assert "give each a name" in capsys.readouterr().err
    assert cli.main(["evaluate", "--detector", "hu21", "--detector", str(tmp_path / "nope.pt"), *common]) == 2
    assert "nope.pt: no such detector file" in capsys.readouterr().err
