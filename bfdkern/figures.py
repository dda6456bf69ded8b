"""Figures as PNG files: matplotlib with the Agg backend (no display), saved the same way everywhere."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: it costs start-up time)."""
    import matplotlib  # lazy: heavy (matplotlib, ~0.3 s), only when a figure is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # lazy: heavy (matplotlib, ~0.3 s), only when a figure is drawn

    return plt


def save_figure(fig, path: str | os.PathLike, *, tight: bool = True, dpi: int = 110) -> Path:
    """Write ``fig`` to the PNG ``path`` (its folder created), close it, and return the path. ``tight``:
    ``tight_layout`` first (slow with many panels: those set their margins themselves and pass False)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
