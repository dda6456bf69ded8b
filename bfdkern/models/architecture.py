"""What an encoder file must say about its architecture: the backbones bfdkern builds and the checks of a
model config (backbone, embedding size, task spec, input statistics and size)."""

from __future__ import annotations

from bfdkern.models.choices import BACKBONES
from bfdkern.models.files import Fields
from bfdkern.tasks import TaskSpec

NORMALIZATION_BUFFERS = ("mean", "std")
"""The model's input statistics, saved with its weights."""


def check_model_config(fields: Fields, name: str) -> dict:
    """Validate a model config field (backbone, feature_dim, spec, mean, std, input_size); returns it."""
    config = fields.dict(name)
    _plain_values(fields, name, config)
    fields.string(f"{name}.backbone", BACKBONES)
    fields.integer(f"{name}.feature_dim", minimum=1)
    spec = fields.get(f"{name}.spec", None)
    if spec is not None:
        if not isinstance(spec, dict):
            fields.fail(f"{name}.spec", "expected a task spec dict or None")
        try:
            TaskSpec.from_dict(spec)
        except (KeyError, TypeError, ValueError) as exc:
            fields.fail(f"{name}.spec", f"not a task spec ({exc})")
    for key in NORMALIZATION_BUFFERS:
        if key in config:
            fields.numbers(f"{name}.{key}", length=3)
    if "std" in config and not all(v > 0 for v in config["std"]):
        fields.fail(f"{name}.std", f"must be > 0, got {config['std']}")
    fields.integer(f"{name}.input_size", minimum=8, optional=True)
    return config


def _plain_values(fields: Fields, name: str, value) -> None:
    """A config holds JSON values only (strings, numbers, booleans, None, lists, dicts with string keys)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                fields.fail(name, f"expected string keys, got {key!r}")
            _plain_values(fields, f"{name}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _plain_values(fields, f"{name}.{i}", item)
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        fields.fail(name, f"expected a plain value (text, number, list), got {type(value).__name__}")
