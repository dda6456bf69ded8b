"""Encoder *source* strings, as detector files record them: an optional kind prefix and a path.

* ``PATH`` (a run, an encoder file or an exported folder), ``embedding:PATH``, ``torchscript:PATH``,
  ``torchvision:ARCH:PATH``.

A detector file records its encoder's source twice: absolute (``source``) and relative to the detector file's
folder (``relative_source``), so that a folder holding both can be moved or shared; the encoder's content hash
(its fingerprint) decides whether a file found there is the right one.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIXES = ("embedding:", "torchscript:")


def split_source(text: str) -> tuple[str, str]:
    """``"torchvision:resnet50:/w.pth"`` -> ``("torchvision:resnet50:", "/w.pth")``; ``"/run"`` -> ``("", "/run")``."""
    text = str(text)
    if text.startswith("torchvision:"):
        arch, sep, path = text.removeprefix("torchvision:").partition(":")
        return (f"torchvision:{arch}:", path) if sep else ("", text)
    for prefix in PREFIXES:
        if text.startswith(prefix):
            return prefix, text.removeprefix(prefix)
    return "", text


def absolute_source(text: str) -> str:
    """The source with its path made absolute (so a detector file finds it from any working folder)."""
    prefix, path = split_source(text)
    return prefix + str(Path(path).resolve())


def relative_source(text: str, folder: str | os.PathLike) -> str | None:
    """The source with its path relative to ``folder`` (None when it cannot be, e.g. another drive)."""
    prefix, path = split_source(text)
    try:
        return prefix + os.path.relpath(Path(path).resolve(), Path(folder).resolve())
    except ValueError:
        return None


def candidate_sources(encoder: dict, detector_path: str | os.PathLike) -> list[str]:
    """Where a detector file's encoder may be, in the order to try: its path relative to the detector's folder
    (the two moved together), the recorded absolute path, and a file of the same name beside the detector."""
    folder = Path(detector_path).resolve().parent
    out = []
    source = encoder.get("source")
    rel = encoder.get("relative_source")
    if isinstance(rel, str) and rel:
        prefix, path = split_source(rel)
        # The kind of encoder is the recorded source's: a relative path never turns a weights file into code.
        if not isinstance(source, str) or split_source(source)[0] == prefix:
            out.append(prefix + str((folder / path).resolve()))
    if isinstance(source, str) and source:
        out.append(source)
        prefix, path = split_source(source)
        name = Path(path).name
        if name:
            out.append(prefix + str(folder / name))
    return list(dict.fromkeys(out))


def source_exists(text: str) -> bool:
    """Whether the source's path exists."""
    return Path(split_source(text)[1]).exists()
