"""The paper's table, parsed back from CSV, Markdown and LaTeX: methods as rows, generators as columns with the
mean last, one block per perturbation (clean first) and real source, the values of the results in percent."""

import csv
import io
import re

import numpy as np
import pytest

from bfdkern.detect.evaluation import evaluate_scores
from bfdkern.detect.metrics import METRIC_LABELS
from bfdkern.detect.tables import format_paper_table


class _Det:
    kind, positive_class, score_name, threshold = "binary", "fake", "P(fake)", 0.5

    def decide(self, scores):
        return (np.asarray(scores) > 0.5).astype(int)


def _entries(real_sources=("real",)):
    rng = np.random.default_rng(0)
    out = []
    for method, shift in (("oc", 0.1), ("bin", 0.3)):
        for pert, extra in (("clean", 0.0), ("jpeg=75", -0.05)):
            reals = {s: rng.uniform(0, 0.6, 30) for s in real_sources}
            fakes = {g: rng.uniform(shift + extra, 1, 20) for g in ("SD1.5", "Mid_v5")}
            out.append({"method": method, "perturbation": pert, "result": evaluate_scores(_Det(), reals, fakes)})
    return out


def _expected(entries, pert, real, method, gen, metric):
    e = next(e for e in entries if e["method"] == method and e["perturbation"] == pert)
    row = next(r for r in e["result"]["rows"] if r["real"] == real and r["generator"] == gen)
    return round(100 * row[metric], 2)


METRICS = ("auc", "ap_fake", "eer")


def test_csv_parses_back():
    entries = _entries()
    rows = list(csv.DictReader(io.StringIO(format_paper_table(entries, "csv", METRICS))))
    assert [(r["perturbation"], r["method"]) for r in rows] == [
        ("clean", "oc"),
        ("clean", "bin"),
        ("jpeg=75", "oc"),
        ("jpeg=75", "bin"),
    ]
    header = list(rows[0])[3:]
    assert header == [f"{g} {METRIC_LABELS[m]}" for g in ("SD1.5", "Mid_v5", "mean") for m in METRICS]
    for r in rows:
        for g in ("SD1.5", "Mid_v5", "mean"):
            for m in METRICS:
                value = float(r[f"{g} {METRIC_LABELS[m]}"])
                assert value == _expected(entries, r["perturbation"], "real", r["method"], g, m)


def test_markdown_parses_back():
    entries = _entries()
    text = format_paper_table(entries, "md", ("auc",))
    blocks = re.findall(r"\*\*(.+?)\*\*.*?\n\n(\|.*?)\n\n", text + "\n\n", flags=re.S)
    assert [b[0] for b in blocks] == ["clean", "jpeg=75"]
    for pert, table in blocks:
        lines = table.splitlines()
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        assert cells[0] == ["method", "SD1.5", "Mid_v5", "mean"] and set(cells[1]) <= {"---", "---:"}
        for row in cells[2:]:
            for g, value in zip(cells[0][1:], row[1:]):
                assert float(value) == _expected(entries, pert, "real", row[0], g, "auc")


def test_latex_parses_back_with_real_sources():
    entries = _entries(("ffhq", "celeba"))
    text = format_paper_table(entries, "tex", METRICS)
    assert text.startswith("\\begin{tabular}{l" + "r" * 9 + "}") and "\\bottomrule" in text
    lines = [line.strip() for line in text.splitlines()]
    groups = re.findall(r"\\multicolumn\{3\}\{c\}\{(.+?)\}", lines[2])
    assert groups == ["SD1.5", "Mid\\_v5", "mean"]
    assert lines[4].rstrip("\\ ").split(" & ")[1:4] == [METRIC_LABELS[m].replace("%", "\\%") for m in METRICS]
    captions = re.findall(r"\\textit\{(.+?)\}", text)
    assert captions == [
        "clean (real: ffhq)",
        "clean (real: celeba)",
        "clean (real: mean)",
        "jpeg=75 (real: ffhq)",
        "jpeg=75 (real: celeba)",
        "jpeg=75 (real: mean)",
    ]
    block = None
    for line in lines:
        if line.startswith("\\multicolumn{10}"):
            pert, real = re.match(r".*\\textit\{(.+?) \(real: (.+?)\)\}", line).groups()
            block = (pert, real)
        elif block and line.endswith("\\\\") and not line.startswith("\\"):
            method, *values = [c.strip() for c in line[:-2].split("&")]
            gens = [g for g in ("SD1.5", "Mid_v5", "mean") for _ in METRICS]
            for value, g, m in zip(values, gens, METRICS * 3):
                assert float(value) == _expected(entries, block[0], block[1], method, g, m)


def test_bad_format_or_metric():
    with pytest.raises(ValueError, match="table format 'xls'"):
        format_paper_table(_entries(), "xls")
    with pytest.raises(ValueError, match="unknown metrics"):
        format_paper_table(_entries(), "md", ("auroc",))
