"""The results table in the layout of the papers: methods as rows, generators as columns (the mean last), one
column group per metric, one row block per perturbation (the clean one first) and per real source; as CSV,
Markdown or LaTeX (booktabs), values in percent with two decimals.

With one metric the columns are the generators themselves; with several, each generator spans one column per
metric (``SD1.5 AUC``, ``SD1.5 AP(fake+)``, ... in CSV and Markdown; a two-row header in LaTeX).
"""

from __future__ import annotations

import csv
import io

from bfdkern.detect.evaluation import MEAN
from bfdkern.detect.metrics import METRIC_KEYS, METRIC_LABELS

FORMATS = ("csv", "md", "tex")


def table_blocks(results: list[dict]) -> tuple[list[str], list[dict]]:
    """(generator columns with "mean" last, blocks) from evaluation entries.

    Args:
        results: one entry per (method, perturbation): ``{"method", "perturbation", "result"}`` where ``result``
            is :func:`bfdkern.detect.evaluation.evaluate_scores`'s.

    Returns:
        blocks: ``{"perturbation", "real", "rows": [(method, {generator: {metric: value}})]}`` in order:
        perturbations as first met (the clean one first when given first), then real sources (the mean last).
    """
    generators: list[str] = []
    blocks: dict[tuple[str, str], dict] = {}
    for entry in results:
        for row in entry["result"]["rows"]:
            if row["generator"] != MEAN and row["generator"] not in generators:
                generators.append(row["generator"])
            key = (entry["perturbation"], row["real"])
            block = blocks.setdefault(key, {"perturbation": key[0], "real": key[1], "rows": {}})
            block["rows"].setdefault(entry["method"], {})[row["generator"]] = {m: row[m] for m in METRIC_KEYS}
    ordered = [{**b, "rows": list(b["rows"].items())} for b in blocks.values()]
    return [*generators, MEAN], ordered


def _header(generators: list[str], metrics) -> list[str]:
    if len(metrics) == 1:
        return list(generators)
    return [f"{g} {METRIC_LABELS[m]}" for g in generators for m in metrics]


def _values(cells: dict, generators: list[str], metrics) -> list[str]:
    out = []
    for g in generators:
        for m in metrics:
            out.append(f"{100 * cells[g][m]:.2f}" if g in cells else "")
    return out


def format_paper_table(results: list[dict], fmt: str = "md", metrics=("auc", "ap_fake", "acc")) -> str:
    """The table as text in ``fmt`` (``csv``, ``md`` or ``tex``); ``metrics`` are keys of
    :data:`bfdkern.detect.metrics.METRIC_KEYS`.

    CSV: one header row (``perturbation, real, method``, then the value columns) and one row per method and
    block. Markdown: a bold caption line per block, then a table with ``method`` and the value columns. LaTeX: one
    ``tabular`` with a generator row (``\\multicolumn`` over its metrics), a metric row, and one block per
    perturbation and real source introduced by an italic ``\\multicolumn`` line."""
    if fmt not in FORMATS:
        raise ValueError(f"table format {fmt!r}: expected one of {list(FORMATS)}")
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRIC_KEYS]
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown}: expected some of {list(METRIC_KEYS)}")
    generators, blocks = table_blocks(results)
    several_reals = len({b["real"] for b in blocks}) > 1
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["perturbation", "real", "method", *_header(generators, metrics)])
        for b in blocks:
            for method, cells in b["rows"]:
                w.writerow([b["perturbation"], b["real"], method, *_values(cells, generators, metrics)])
        return buf.getvalue()
    if fmt == "md":
        lines = []
        head = ["method", *_header(generators, metrics)]
        for b in blocks:
            caption = f"**{b['perturbation']}**" + (f" · real: {b['real']}" if several_reals else "")
            caption += "  (%; fake = positive class)" if not lines else ""
            lines += [
                caption,
                "",
                "| " + " | ".join(head) + " |",
                "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
            ]
            for method, cells in b["rows"]:
                lines.append("| " + " | ".join([_md(method), *_values(cells, generators, metrics)]) + " |")
            lines.append("")
        return "\n".join(lines)
    return _latex(generators, blocks, metrics, several_reals)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def _tex(text: str) -> str:
    out = str(text)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        out = out.replace(a, b)
    return out


def _latex(generators, blocks, metrics, several_reals) -> str:
    m = len(metrics)
    ncols = 1 + m * len(generators)
    lines = [r"\begin{tabular}{l" + "r" * (ncols - 1) + "}", r"\toprule"]
    if m == 1:
        lines.append(" & ".join(["Method", *(_tex(g) for g in generators)]) + r" \\")
    else:
        groups = [rf"\multicolumn{{{m}}}{{c}}{{{_tex(g)}}}" for g in generators]
        lines.append(" & ".join(["", *groups]) + r" \\")
        rules = [rf"\cmidrule(lr){{{2 + i * m}-{1 + (i + 1) * m}}}" for i in range(len(generators))]
        lines.append(" ".join(rules))
        lines.append(" & ".join(["Method", *(_tex(METRIC_LABELS[k]) for k in metrics * len(generators))]) + r" \\")
    for b in blocks:
        caption = _tex(b["perturbation"]) + (f" (real: {_tex(b['real'])})" if several_reals else "")
        lines += [r"\midrule", rf"\multicolumn{{{ncols}}}{{l}}{{\textit{{{caption}}}}} \\"]
        for method, cells in b["rows"]:
            lines.append(" & ".join([_tex(method), *_values(cells, generators, metrics)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)
