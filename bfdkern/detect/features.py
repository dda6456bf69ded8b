"""Feature extraction with the frozen encoder: batched, with a progress bar, cached on disk.

The cache holds one ``.npy`` vector per image under
``CACHE_DIR/<encoder fingerprint>/<preprocessing key>/<sha256 of the file's bytes>.npy``: a changed
checkpoint, a changed preprocessing setting or a changed file is a miss, never a stale hit; a renamed
or copied file is a hit. Entries are written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bfdkern.data.transforms import to_tensor
from bfdkern.detect.preprocess import Preprocessing, read_bytes


def encoder_fingerprint(model: nn.Module, skip: Sequence[str] = ()) -> str:
    """The encoder's identity: sha256 (hex, 64 chars) of its state dict (names, dtypes, shapes and
    bytes, in name order), leaving out the entries named in ``skip``. Equal for the same checkpoint however it
    was loaded, on any device."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in skip:
            continue
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$BFDKERN_CACHE_DIR``, else ``$XDG_CACHE_HOME/bfdkern/features``, else ``~/.cache/bfdkern/features``."""
    env = os.environ.get("BFDKERN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bfdkern" / "features"


class FeatureCache:
    """Feature vectors on disk for one (encoder, preprocessing) pair, keyed by file content hash."""

    def __init__(self, root: str | os.PathLike, encoder_id: str, preprocessing: Preprocessing):
        settings = json.dumps(preprocessing.to_dict(), sort_keys=True).encode()
        self.dir = Path(root) / encoder_id[:32] / hashlib.sha256(settings).hexdigest()[:16]

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    def get(self, digest: str, dim: int | None = None) -> np.ndarray | None:
        """The cached [D] float32 vector, or None (also for an unreadable or mis-shaped entry)."""
        path = self._path(digest)
        try:
            vec = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if vec.ndim != 1 or (dim is not None and vec.shape[0] != dim) or not np.isfinite(vec).all():
            return None
        return vec.astype(np.float32, copy=False)

    def put(self, digest: str, vec: np.ndarray) -> None:
        """Store one [D] vector atomically (a crash never leaves a half-written entry)."""
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(vec, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def image_tensor(image, size: int) -> torch.Tensor:
    """A preprocessed RGB PIL image -> [3, size, size] float in [0, 1] (the project's one input path)."""
    return to_tensor(image, size=size)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def extract_features(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    preprocessing: Preprocessing | None = None,
    num_workers: int = 2,
    progress: bool = True,
    encoder_id: str | None = None,
) -> np.ndarray:
    """L2-normalised features of image files under the frozen ``model``.

    Args:
        model: any module with ``features(x [B, 3, H, W] in [0, 1]) -> [B, D]``; run in eval mode under
            ``torch.inference_mode`` and given back in its original mode and device.
        paths: N image files; each goes through ``preprocessing`` (default :class:`Preprocessing`).
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``, ... ; None picks CUDA when available.
        cache_dir: feature cache root; None disables the cache.
        num_workers: threads decoding and preprocessing images while the model runs.
        progress: show a tqdm bar.
        encoder_id: the model's :func:`encoder_fingerprint` when the caller already has it.

    Returns:
        float32 array [N, D], row i for ``paths[i]``.

    Raises:
        ValueError: no paths; :class:`~bfdkern.detect.preprocess.ImageError` naming an unreadable file.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no images to extract features from")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    preprocessing = preprocessing or Preprocessing()
    dev = resolve_device(device)
    cache = None
    if cache_dir is not None:
        cache = FeatureCache(cache_dir, encoder_id or encoder_fingerprint(model), preprocessing)

    def prepare(item: tuple[Path, bytes]):
        path, data = item
        image, face_found = preprocessing.apply(data, path)
        return image_tensor(image, preprocessing.size), face_found

    out: list[np.ndarray | None] = [None] * len(paths)
    no_face: list[Path] = []
    was_training = model.training
    param = next(iter(model.parameters()), None)
    home = param.device if param is not None else torch.device("cpu")
    model.eval().to(dev)
    bar = tqdm(total=len(paths), desc="features", unit="img", disable=not progress, leave=False)
    try:
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool, torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                chunk = range(start, min(start + batch_size, len(paths)))
                todo: list[tuple[int, str, bytes]] = []
                for i in chunk:
                    data = read_bytes(paths[i])
                    digest = hashlib.sha256(data).hexdigest()
                    hit = cache.get(digest) if cache is not None else None
                    if hit is None:
                        todo.append((i, digest, data))
                    else:
                        out[i] = hit
                if todo:
                    prepared = list(pool.map(prepare, [(paths[i], data) for i, _, data in todo]))
                    x = torch.stack([t for t, _ in prepared]).to(dev, non_blocking=True)
                    feats = model.features(x).float().cpu().numpy()
                    if feats.ndim != 2 or feats.shape[0] != len(todo):
                        raise ValueError(f"model.features gave shape {feats.shape}, expected [{len(todo)}, D]")
                    for (i, digest, _), vec, (_, face_found) in zip(todo, feats, prepared):
                        out[i] = vec
                        if face_found is False:
                            no_face.append(paths[i])
                        if cache is not None:
                            cache.put(digest, vec)
                bar.update(len(chunk))
    finally:
        bar.close()
        model.to(home).train(was_training)
    dims = {v.shape[0] for v in out}
    if len(dims) != 1:
        raise ValueError(f"feature cache entries of different sizes {sorted(dims)}; clear {cache.dir}")
    if no_face:
        warnings.warn(
            f"no face found in {len(no_face)} of {len(paths)} images (kept whole), e.g. {no_face[0]}", stacklevel=2
        )
    return np.stack(out).astype(np.float32, copy=False)
