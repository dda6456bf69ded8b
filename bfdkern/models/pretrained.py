"""Exported encoder folders: ``config.json`` (the architecture, the input statistics and size, a checksum of
the weights, and whatever the exporter adds: provenance, training summary) beside ``model.safetensors`` (the
weights; a format that holds tensors only, so loading runs no code).

:meth:`bfdkern.models.BladesModel.save_pretrained` writes one, :meth:`~bfdkern.models.BladesModel.from_pretrained`
reads it; ``bfdkern export RUN -o DIR`` adds a model card.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from bfdkern.atomic import atomic_write
from bfdkern.models.architecture import check_model_config
from bfdkern.models.files import Fields, SavedFileError, payload_checksum, state_dict_field

FORMAT = "bfdkern.pretrained/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def write_pretrained(
    folder: str | os.PathLike, model_config: dict, state_dict: dict, extra_config: dict | None = None
) -> Path:
    """Write ``FOLDER/model.safetensors`` (``state_dict``, on the CPU) and ``FOLDER/config.json`` (``format``,
    ``model`` = ``model_config``, ``checksum`` of the weights, then ``extra_config``'s entries). Returns the
    folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    config = {"format": FORMAT, "model": model_config, "weights": WEIGHTS_FILE, "checksum": payload_checksum(tensors)}
    for key, value in (extra_config or {}).items():
        if key in config:
            raise ValueError(f"extra_config may not replace {key!r}")
        config[key] = value
    weights = save(tensors, metadata={"format": FORMAT})
    atomic_write(folder / WEIGHTS_FILE, lambda f: f.write(weights))
    text = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(folder / CONFIG_FILE, lambda f: f.write(text))
    return folder


def read_pretrained(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], Path]:
    """(model config, state dict, weights path) of an exported folder, validated: the config's fields, finite
    tensors, and the weights' checksum. Raises FileNotFoundError or :class:`SavedFileError` (one line naming
    the file and the field)."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (is {folder} a folder from `bfdkern export`?)")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SavedFileError(f"{config_path}: not valid JSON ({exc})") from None
    fields = Fields(config_path, config)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise SavedFileError(f"{config_path}: not a bfdkern exported encoder (format {found!r}, expected {FORMAT!r})")
    model_config = check_model_config(fields, "model")
    checksum = fields.string("checksum")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SavedFileError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    state_dict_field(Fields(weights_path, {"weights": state}), "weights")
    if payload_checksum(state) != checksum:
        raise SavedFileError(
            f"{weights_path}: checksum mismatch with {config_path.name}: the weights are damaged or belong to "
            "another export"
        )
    return model_config, state, weights_path
