"""What a manifest holds, per EXIF task: how often the tag is present and usable, how many distinct
values it takes, its commonest values, and why labels are missing (the seed paper's Table 8), as
text and as a coverage bar plot."""

from __future__ import annotations

import os
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from fractions import Fraction

from bfdkern.exif.labels import TASKS
from bfdkern.exif.manifest import FILE_REASONS, open_manifest
from bfdkern.exif.parse import ORDINAL_SOURCES
from bfdkern.exif.tables import ROW_REASONS
from bfdkern.figures import pyplot

_REASON_COLORS = ["tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]

NOT_READ = "file_not_read"
"""Missing because the whole file could not be read (see the file-level reasons)."""


@dataclass
class TagSummary:
    """One task's coverage over a manifest (counts are files)."""

    task: str
    files: int
    present: int = 0
    usable: int = 0
    unique_values: int = 0
    unique_labels: int = 0
    examples: list[tuple[str, int]] = field(default_factory=list)
    missing: Counter = field(default_factory=Counter)

    @property
    def frequency(self) -> float:
        """Share of files that have the tag."""
        return self.present / self.files if self.files else 0.0

    @property
    def coverage(self) -> float:
        """Share of files with a usable label."""
        return self.usable / self.files if self.files else 0.0


@dataclass
class ManifestSummary:
    """Coverage of a whole manifest."""

    manifest: str
    files: int
    labelled: int
    file_reasons: Counter
    tags: list[TagSummary]
    rejected: Counter = field(default_factory=Counter)
    source: str = "files"


def format_label(task: str, label) -> str:
    """A label as people write it: ``1/60 s``, ``f/2.8``, ``50 mm``, ``ISO 400``, class names as is."""
    if task not in ORDINAL_SOURCES:
        return str(label)
    v = float(label)
    if task == "exposure_time":
        return f"{Fraction(v).limit_denominator(100_000) if v < 1 else format(v, 'g')} s"
    if task == "aperture":
        return f"f/{v:.3g}"
    if task == "focal_length":
        return f"{v:g} mm"
    return f"ISO {v:g}"


def summarize(manifest: str | os.PathLike, examples: int = 4) -> ManifestSummary:
    """Per-task coverage of ``manifest`` with the ``examples`` commonest labels of each task."""
    with closing(open_manifest(manifest)) as db:
        files = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        labelled = db.execute("SELECT COUNT(*) FROM files WHERE reason IS NULL").fetchone()[0]
        file_reasons = Counter(
            dict(db.execute("SELECT reason, COUNT(*) FROM files WHERE reason IS NOT NULL GROUP BY reason"))
        )
        tags = []
        for t in TASKS:
            s = TagSummary(t, files)
            s.present, s.usable, s.unique_values, s.unique_labels = db.execute(
                f"SELECT COUNT({t}_raw), COUNT({t}_label), COUNT(DISTINCT {t}_value), COUNT(DISTINCT {t}_label) "
                "FROM files"
            ).fetchone()
            common = db.execute(
                f"SELECT {t}_label, COUNT(*) AS n FROM files WHERE {t}_label IS NOT NULL "
                f"GROUP BY {t}_label ORDER BY n DESC, {t}_label LIMIT ?",
                (examples,),
            )
            s.examples = [(format_label(t, label), n) for label, n in common]
            for reason, n in db.execute(
                f"SELECT COALESCE({t}_reason, '{NOT_READ}'), COUNT(*) FROM files WHERE {t}_label IS NULL GROUP BY 1"
            ):
                s.missing[reason] = n
            tags.append(s)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rejected = Counter()
        if "rejects" in tables:
            rejected.update(dict(db.execute("SELECT reason, COUNT(*) FROM rejects GROUP BY reason")))
        source = dict(db.execute("SELECT key, value FROM meta")).get("labels", "files")
    return ManifestSummary(os.fspath(manifest), files, labelled, file_reasons, tags, rejected, source)


def format_table(summary: ManifestSummary) -> str:
    """Table 8 as text: per task frequency, usable share, unique values, examples; then the reasons."""
    lines = [
        f"{summary.manifest}: {summary.files} files, {summary.labelled} with at least one label",
        "",
        f"{'tag':<17} {'frequency':>9} {'usable':>7} {'unique':>7}  examples (files)",
    ]
    for s in summary.tags:
        unique = f"{s.unique_values}" if s.unique_values == s.unique_labels else f"{s.unique_values}->{s.unique_labels}"
        examples = ", ".join(f"{label} ({n})" for label, n in s.examples)
        lines.append(f"{s.task:<17} {s.frequency:>9.1%} {s.coverage:>7.1%} {unique:>7}  {examples}")
    lines += ["", "  unique: distinct stored values -> distinct labels (makes and codes fold into classes)", ""]
    reasons = sorted({r for s in summary.tags for r in s.missing}, key=lambda r: (r == NOT_READ, r))
    if reasons:
        lines.append("missing labels by reason (files):")
        lines.append(f"{'tag':<17} " + " ".join(f"{r:>16}" for r in reasons))
        for s in summary.tags:
            lines.append(f"{s.task:<17} " + " ".join(f"{s.missing.get(r, 0):>16d}" for r in reasons))
        lines.append("")
    if summary.file_reasons:
        lines.append("files without any label:")
        lines += [f"{n:8d}  {r}: {FILE_REASONS.get(r, '')}" for r, n in summary.file_reasons.most_common()]
    if summary.rejected:
        lines.append(f"table rows not used ({summary.source}; the rejects table lists each with its line):")
        lines += [f"{n:8d}  {r}: {ROW_REASONS.get(r, '')}" for r, n in summary.rejected.most_common()]
    return "\n".join(lines)


def plot_coverage(summary: ManifestSummary, png: str | os.PathLike) -> None:
    """A horizontal stacked bar per task: share of files with a usable label, then each missing reason."""
    from matplotlib.ticker import PercentFormatter  # lazy: heavy (matplotlib), only when a figure is drawn

    plt = pyplot()
    reasons = sorted({r for s in summary.tags for r in s.missing}, key=lambda r: (r == NOT_READ, r))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(summary.tags) + 1.8))
    names = [s.task for s in summary.tags][::-1]
    rows = summary.tags[::-1]
    left = [0.0] * len(rows)
    palette = iter(_REASON_COLORS * (1 + len(reasons) // len(_REASON_COLORS)))
    segments = [("usable", [s.coverage for s in rows], "tab:green")]
    segments += [
        (r, [s.missing.get(r, 0) / max(s.files, 1) for s in rows], "lightgrey" if r == NOT_READ else next(palette))
        for r in reasons
    ]
    for label, widths, color in segments:
        ax.barh(names, widths, left=left, color=color, label=label, edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths)]
    for y, s in enumerate(rows):
        ax.text(0.01, y, f"{s.coverage:.0%}", va="center", fontsize=8, color="white")
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(f"share of files ({summary.files} files, {summary.labelled} with labels)")
    ax.set_title(f"EXIF label coverage: {os.path.basename(summary.manifest)}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
