"""Feature extraction with the frozen encoder: batched, with a progress bar, cached on disk, and never stopped
by one unreadable image.

:func:`image_features` reads each file through the one decode path (with its cap policy), skips a file that
cannot be used with its reason (:class:`Skipped`) and returns the features of the others with their content
hashes (:class:`ImageFeatures`); :func:`extract_features` is the strict form that raises on the first.

The cache holds one ``.npy`` vector per image under
``CACHE_DIR/<encoder fingerprint>/<preprocessing key>/<sha256 of the file's bytes>.npy``: a changed
checkpoint, a changed preprocessing setting (perturbation included) or a changed file is a miss, never a stale
hit; a renamed or copied file is a hit. Entries are written atomically and read with ``allow_pickle=False``; a
cache that cannot be written (disk full) is a warning, and extraction goes on without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bfdkern.data.decode import DEFAULT_LIMITS, Limits, UnreadableImage, decode_image, read_image_file
from bfdkern.data.transforms import array_to_tensor
from bfdkern.detect.preprocess import Preprocessing


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

    def __init__(self, root: str | os.PathLike, encoder_id: str, preprocessing: Preprocessing, perturbation=None):
        settings = preprocessing.to_dict()
        if perturbation is not None:
            settings["perturbation"] = perturbation.key()
        key = json.dumps(settings, sort_keys=True).encode()
        self.dir = Path(root) / encoder_id[:32] / hashlib.sha256(key).hexdigest()[:16]

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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CUDA when available, else CPU; a CUDA device asked for without one is a ValueError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is available here (use --device cpu)")
    return dev


@dataclass(frozen=True)
class Skipped:
    """An image left out, with its countable ``reason`` (:data:`bfdkern.data.decode.REASONS`) and details."""

    path: Path
    reason: str
    detail: str = ""

    @classmethod
    def of(cls, path, exc: UnreadableImage) -> Skipped:
        """From the decode path's error."""
        return cls(Path(path), exc.reason, exc.detail)

    def error(self) -> UnreadableImage:
        """The decode path's error again (its message is one line naming the file)."""
        return UnreadableImage(self.path, self.reason, self.detail)

    @property
    def message(self) -> str:
        """``PATH: reason (detail)``."""
        return str(self.error())

    @property
    def why(self) -> str:
        """``reason (detail)``, without the path."""
        return self.reason + (f" ({self.detail})" if self.detail else "")


@dataclass
class ImageFeatures:
    """What :func:`image_features` made of a list of files: the features of those it could read (in input
    order), their content hashes, and the files it skipped."""

    features: np.ndarray  # float32 [M, D], row i for paths[i]
    paths: list[Path]  # the M files read
    digests: list[str]  # sha256 hex of each one's bytes
    index: np.ndarray  # int64 [M], position of each in the input list
    skipped: list[Skipped] = field(default_factory=list)
    no_face: list[Path] = field(default_factory=list)


def skipped_summary(skipped: Sequence[Skipped]) -> str:
    """``"3 (truncated or corrupt: 2, not an image: 1)"``: the count and the reasons, most frequent first."""
    counts = Counter(s.reason for s in skipped)
    return f"{len(skipped)} ({', '.join(f'{r}: {n}' for r, n in counts.most_common())})" if skipped else "0"


def readable_images(paths, workers: int = 2, progress: bool = True) -> tuple[list[Path], list[Skipped]]:
    """(the files that decode, the others with their reasons), each decoded once through the one decode path:
    for trainers that read images many times and must not fail on one in the middle of a run."""

    def check(path: Path):
        try:
            decode_image(path)
        except UnreadableImage as exc:
            return Skipped.of(path, exc)
        return None

    paths = [Path(p) for p in paths]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(
            tqdm(pool.map(check, paths), total=len(paths), desc="checking", disable=not progress, leave=False)
        )
    return [p for p, r in zip(paths, results) if r is None], [r for r in results if r is not None]


def skipped_record(skipped: Sequence[Skipped], keep: int = 100) -> dict:
    """JSON-able record of skipped images (as detector files and results keep it): the count, the count per
    reason, and the first ``keep`` files with their reasons."""
    return {
        "count": len(skipped),
        "reasons": dict(Counter(s.reason for s in skipped).most_common()),
        "files": [{"path": str(s.path), "reason": s.reason, "detail": s.detail} for s in skipped[:keep]],
    }


def image_features(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    preprocessing: Preprocessing | None = None,
    perturbation=None,
    num_workers: int = 2,
    progress: bool = True,
    encoder_id: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ImageFeatures:
    """L2-normalised features of image files under the frozen ``model``; unreadable files are skipped.

    Args:
        model: any module with ``features(x [B, 3, H, W] in [0, 1]) -> [B, D]``; run in eval mode under
            ``torch.inference_mode`` and given back in its original mode and device.
        paths: N image files; each goes through ``preprocessing`` (default :class:`Preprocessing`).
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``, ... ; None picks CUDA when available.
        cache_dir: feature cache root; None disables the cache.
        perturbation: an optional :class:`~bfdkern.detect.perturb.Perturbation` after the preprocessing.
        num_workers: threads reading, hashing, decoding and preprocessing images while the model runs.
        progress: show a tqdm bar.
        encoder_id: the model's :func:`encoder_fingerprint` when the caller already has it.
        limits: the cap policy of the decode path.

    Returns:
        :class:`ImageFeatures` (features float32 [M, D] of the M readable files, M <= N).
    """
    paths = [Path(p) for p in paths]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    preprocessing = preprocessing or Preprocessing()
    dev = resolve_device(device)
    cache = None
    if cache_dir is not None:
        cache = FeatureCache(cache_dir, encoder_id or encoder_fingerprint(model), preprocessing, perturbation)

    def read(path: Path):
        try:
            data = read_image_file(path, limits)
        except UnreadableImage as exc:
            return Skipped.of(path, exc)
        return hashlib.sha256(data).hexdigest(), data

    def prepare(item: tuple[Path, str, bytes]):
        path, digest, data = item
        try:
            array, face_found = preprocessing.apply(data, path, perturbation, digest)
        except UnreadableImage as exc:
            return Skipped.of(path, exc)
        return array_to_tensor(array), face_found

    out: dict[int, np.ndarray] = {}
    digests: dict[int, str] = {}
    skipped: list[tuple[int, Skipped]] = []
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
                for i, got in zip(chunk, pool.map(read, [paths[i] for i in chunk])):
                    if isinstance(got, Skipped):
                        skipped.append((i, got))
                        continue
                    digests[i] = got[0]
                    hit = cache.get(got[0]) if cache is not None else None
                    if hit is None:
                        todo.append((i, *got))
                    else:
                        out[i] = hit
                prepared = list(pool.map(prepare, [(paths[i], digest, data) for i, digest, data in todo]))
                ready = []
                for (i, digest, _), got in zip(todo, prepared):
                    if isinstance(got, Skipped):
                        skipped.append((i, got))
                        del digests[i]
                    else:
                        ready.append((i, digest, *got))
                if ready:
                    x = torch.stack([t for _, _, t, _ in ready]).to(dev, non_blocking=True)
                    feats = model.features(x).float().cpu().numpy()
                    if feats.ndim != 2 or feats.shape[0] != len(ready):
                        raise ValueError(f"model.features gave shape {feats.shape}, expected [{len(ready)}, D]")
                    for (i, digest, _, face_found), vec in zip(ready, feats):
                        out[i] = vec
                        if face_found is False:
                            no_face.append(paths[i])
                        if cache is not None:
                            cache = _put(cache, digest, vec)
                bar.update(len(chunk))
    finally:
        bar.close()
        model.to(home).train(was_training)
    order = sorted(out)
    dims = {out[i].shape[0] for i in order}
    if len(dims) > 1:
        raise ValueError(f"feature cache entries of different sizes {sorted(dims)}; clear {cache.dir}")
    feats = np.stack([out[i] for i in order]).astype(np.float32, copy=False) if order else np.zeros((0, 0), np.float32)
    return ImageFeatures(
        features=feats,
        paths=[paths[i] for i in order],
        digests=[digests[i] for i in order],
        index=np.asarray(order, dtype=np.int64),
        skipped=[s for _, s in sorted(skipped, key=lambda t: t[0])],
        no_face=no_face,
    )


def _put(cache: FeatureCache, digest: str, vec: np.ndarray) -> FeatureCache | None:
    """Store one entry; a cache that cannot be written is a warning and is not used again."""
    try:
        cache.put(digest, vec)
        return cache
    except OSError as exc:
        warnings.warn(
            f"feature cache {cache.dir} cannot be written ({exc.strerror or exc}); going on without it", stacklevel=3
        )
        return None


def warn_no_face(no_face: Sequence[Path], total: int) -> None:
    """One warning for the images whose face was not found (they were centre-cropped)."""
    if no_face:
        warnings.warn(
            f"no face found in {len(no_face)} of {total} images (centre-cropped), e.g. {no_face[0]}", stacklevel=3
        )


def extract_features(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    preprocessing: Preprocessing | None = None,
    perturbation=None,
    num_workers: int = 2,
    progress: bool = True,
    encoder_id: str | None = None,
) -> np.ndarray:
    """The strict form of :func:`image_features`: float32 [N, D], row i for ``paths[i]``.

    Raises:
        ValueError: no paths; :class:`~bfdkern.data.decode.UnreadableImage` naming the first unreadable file.
    """
    if not paths:
        raise ValueError("no images to extract features from")
    got = image_features(
        model,
        paths,
        batch_size,
        device,
        cache_dir,
        preprocessing=preprocessing,
        perturbation=perturbation,
        num_workers=num_workers,
        progress=progress,
        encoder_id=encoder_id,
    )
    if got.skipped:
        raise got.skipped[0].error()
    warn_no_face(got.no_face, len(paths))
    return got.features
