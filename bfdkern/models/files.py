"""Reading saved files back safely: a checksum of the whole payload, and typed field checks whose errors are
one line naming the file and the field.

Every file bfdkern writes and reads back (encoder files, run checkpoints, detector files) stores
:func:`payload_checksum` of its content; a flipped byte anywhere in a tensor, an array or a stored value
changes it (``torch.load`` itself does not check the zip's CRCs). Files written before checksums existed
still load, with the other checks.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch

from bfdkern.atomic import describe_load_error

CHECKSUM_KEY = "checksum"
"""The payload entry holding :func:`payload_checksum` of the rest of the payload."""


class SavedFileError(ValueError):
    """A saved file that cannot be used; the message is one line naming the file (and the field)."""


def _hash_array(h, kind: str, dtype: str, shape: tuple, data: bytes | memoryview) -> None:
    h.update(f"<{kind}|{dtype}|{shape}>".encode())
    h.update(data)


def _update(h, value) -> None:
    """Feed ``value`` to ``h`` in a canonical, type-tagged form (dict entries in key order)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        if t.layout != torch.strided:
            raise TypeError(f"cannot checksum a {t.layout} tensor")
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.empty(0, np.uint8)
        _hash_array(h, "tensor", str(t.dtype), tuple(t.shape), memoryview(raw))
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("cannot checksum an object array")
        a = np.ascontiguousarray(value)
        _hash_array(h, "array", a.dtype.str, a.shape, memoryview(a.reshape(-1).view(np.uint8)))
    elif isinstance(value, dict):
        h.update(f"<dict {len(value)}>".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            _update(h, key)
            _update(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"<{type(value).__name__} {len(value)}>".encode())
        for item in value:
            _update(h, item)
    elif value is None or isinstance(value, (bool, int, float, str, bytes, np.generic, torch.dtype, torch.device)):
        h.update(f"<{type(value).__name__}>{value!r}".encode())
    else:
        raise TypeError(f"cannot checksum a {type(value).__name__}")


def payload_checksum(payload) -> str:
    """sha256 (hex) of a payload of dicts, lists, tuples, tensors, NumPy arrays, numbers and strings: every
    tensor's dtype, shape and bytes and every other value, dict entries in key order. The top-level
    :data:`CHECKSUM_KEY` entry is left out, so a payload can carry its own checksum."""
    h = hashlib.sha256()
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != CHECKSUM_KEY}
    _update(h, payload)
    return h.hexdigest()


def with_checksum(payload: dict) -> dict:
    """``payload`` with :data:`CHECKSUM_KEY` set to its checksum (the same dict, changed in place)."""
    payload[CHECKSUM_KEY] = payload_checksum(payload)
    return payload


def verify_checksum(payload: dict, path: str | os.PathLike) -> bool:
    """Check a loaded payload against its stored checksum. Returns False when it has none (a file written
    before checksums), True when it matches; raises :class:`SavedFileError` when it does not."""
    stored = payload.get(CHECKSUM_KEY)
    if stored is None:
        return False
    if not isinstance(stored, str) or len(stored) != 64:
        raise SavedFileError(f"{path}: field {CHECKSUM_KEY}: expected a sha256 hex string, got {_brief(stored)}")
    try:
        actual = payload_checksum(payload)
    except TypeError as exc:
        raise SavedFileError(f"{path}: unexpected content: {exc}") from None
    if actual != stored:
        raise SavedFileError(
            f"{path}: checksum mismatch (stored {stored[:12]}, content {actual[:12]}): the file is damaged or was "
            "changed after it was written; use an intact copy"
        )
    return True


def _brief(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"an array {value.shape}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


class Fields:
    """Typed reads of a loaded payload's fields by dotted name (``"config.feature_dim"``); every failure is a
    :class:`SavedFileError` (or ``error`` class) ``"PATH: field NAME: problem"``."""

    def __init__(self, path: str | os.PathLike, payload, error: type[SavedFileError] = SavedFileError):
        self.path, self.payload, self.error = path, payload, error

    def fail(self, name: str, problem: str):
        """Raise the one-line error for field ``name``."""
        raise self.error(f"{self.path}: field {name}: {problem}")

    def get(self, name: str, default=KeyError):
        """The value at dotted ``name``; a missing field is an error unless ``default`` is given."""
        value = self.payload
        for part in name.split("."):
            if not isinstance(value, dict):
                self.fail(name, f"expected a dict above it, got {_brief(value)}")
            if part not in value:
                if default is KeyError:
                    self.fail(name, "missing")
                return default
            value = value[part]
        return value

    def dict(self, name: str, optional: bool = False) -> dict | None:
        """A dict field (None when ``optional`` and missing or None)."""
        value = self.get(name, None if optional else KeyError)
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            self.fail(name, f"expected a dict, got {_brief(value)}")
        return value

    def string(self, name: str, choices=None, optional: bool = False) -> str | None:
        """A string field, one of ``choices`` when given."""
        value = self.get(name, None if optional else KeyError)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            self.fail(name, f"expected a string, got {_brief(value)}")
        if choices is not None and value not in choices:
            self.fail(name, f"{value!r} is not one of {list(choices)}")
        return value

    def integer(self, name: str, minimum: int | None = None, optional: bool = False) -> int | None:
        """An integer field (bools refused), at least ``minimum``."""
        value = self.get(name, None if optional else KeyError)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, Integral):
            self.fail(name, f"expected an integer, got {_brief(value)}")
        if minimum is not None and value < minimum:
            self.fail(name, f"{value} is below {minimum}")
        return int(value)

    def number(self, name: str, optional: bool = False, check: Callable[[float], bool] | None = None, what=""):
        """A finite real number field; ``check`` (described by ``what``) must hold."""
        value = self.get(name, None if optional else KeyError)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, Real):
            self.fail(name, f"expected a number, got {_brief(value)}")
        value = float(value)
        if not math.isfinite(value):
            self.fail(name, f"{value} is not finite")
        if check is not None and not check(value):
            self.fail(name, f"{value} is out of range (expected {what})")
        return value

    def numbers(self, name: str, length: int | None = None, optional: bool = False) -> list[float] | None:
        """A list of finite numbers (or a 1-d floating tensor), of ``length`` when given."""
        value = self.get(name, None if optional else KeyError)
        if value is None and optional:
            return None
        if isinstance(value, torch.Tensor) and value.dim() == 1:
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, Real) and not isinstance(v, bool) for v in value
        ):
            self.fail(name, f"expected a list of numbers, got {_brief(value)}")
        if length is not None and len(value) != length:
            self.fail(name, f"expected {length} numbers, got {len(value)}")
        bad = [i for i, v in enumerate(value) if not math.isfinite(float(v))]
        if bad:
            self.fail(name, f"{len(bad)} non-finite value(s), e.g. at index {bad[0]} ({value[bad[0]]})")
        return [float(v) for v in value]

    def tensor(self, name: str, value=KeyError, *, shape: tuple | None = None, ndim: int | None = None):
        """A tensor field: a ``torch.Tensor`` of ``shape`` / ``ndim`` when given, finite when floating."""
        value = self.get(name) if value is KeyError else value
        if not isinstance(value, torch.Tensor):
            self.fail(name, f"expected a tensor, got {_brief(value)}")
        if ndim is not None and value.dim() != ndim:
            self.fail(name, f"expected {ndim} dimensions, got shape {tuple(value.shape)}")
        if shape is not None and tuple(value.shape) != tuple(shape):
            self.fail(name, f"expected shape {tuple(shape)}, got {tuple(value.shape)}")
        check_finite(self, name, value)
        return value


def check_finite(fields: Fields, name: str, value) -> None:
    """Fail ``name`` when the floating tensor or array ``value`` holds NaN or inf."""
    if isinstance(value, torch.Tensor):
        if (value.is_floating_point() or value.is_complex()) and value.numel() and not _all_finite(value):
            bad = int((~torch.isfinite(value)).sum())
            fields.fail(name, f"{bad} of {value.numel()} values are NaN or inf")
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fc" and value.size:
        bad = int((~np.isfinite(value)).sum())
        if bad:
            fields.fail(name, f"{bad} of {value.size} values are NaN or inf")


_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _all_finite(t: torch.Tensor) -> bool:
    """Whether a floating tensor holds no NaN or inf (NumPy's test on the CPU: torch.isfinite(t).all() was 20x
    slower on a ResNet-50's weights; a NaN propagates through amax / amin elsewhere)."""
    t = t.detach()
    if t.device.type == "cpu" and t.dtype in _NUMPY_FLOATS:
        return bool(np.isfinite(t.numpy()).all())
    if t.is_complex():
        return bool(torch.isfinite(t).all())
    return bool(torch.isfinite(t.amax()) and torch.isfinite(t.amin()))


def check_tensors(fields: Fields, name: str, tree) -> None:
    """Every tensor anywhere in ``tree`` (dicts and lists) is finite; fails naming the first one that is not
    (``name.key.index...``)."""
    if isinstance(tree, (torch.Tensor, np.ndarray)):
        check_finite(fields, name, tree)
    elif isinstance(tree, dict):
        for key, value in tree.items():
            check_tensors(fields, f"{name}.{key}", value)
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            check_tensors(fields, f"{name}.{i}", value)


def state_dict_field(fields: Fields, name: str) -> dict:
    """A state dict field: a dict of parameter name (string) -> finite tensor."""
    state = fields.dict(name)
    for key, value in state.items():
        if not isinstance(key, str):
            fields.fail(name, f"expected parameter names (strings), got {_brief(key)}")
        fields.tensor(f"{name}.{key}", value)
    return state


def torch_load(
    path: str | os.PathLike, map_location="cpu", what: str = "file", error=SavedFileError, *, mmap: bool = False
):
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file: FileNotFoundError when it is
    missing, ``error`` when it is not a weights-only torch file (a foreign, truncated or code-carrying pickle).
    ``mmap`` maps the tensors instead of reading them (for large files of which a part is used)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    if mmap:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        except Exception:  # a file in the legacy (non-zip) format cannot be mapped: read it whole below
            pass
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip errors, pickle errors, refused globals: torch raises many types
        raise error(f"{path}: cannot be read as a weights-only torch {what}: {describe_load_error(exc)}") from None
