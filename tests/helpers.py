"""Helpers the tests share: random inputs for a task spec, the shared data folder."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from bfdkern.tasks import TaskSpec

ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """../shared/data beside the repository, or $BFDKERN_SHARED_DATA; None when absent."""
    env = os.environ.get("BFDKERN_SHARED_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def random_targets(
    spec: TaskSpec,
    batch: int,
    *,
    missing: float = 0.2,
    levels: int = 4,
    generator: torch.Generator | None = None,
    dtype=torch.float64,
    device="cpu",
) -> torch.Tensor:
    """[B, J] targets with a fraction of missing labels and, for ordinal tasks, few distinct
    values (so ties occur)."""
    t = spec.empty_targets(batch, dtype=dtype)
    for k, task in enumerate(spec.tasks):
        cols = spec.target_columns(k)
        shape = (batch, task.num_targets)
        if task.kind == "ordinal":
            vals = torch.randint(0, levels, shape, generator=generator).to(dtype) * 0.5 + 1.0
        elif task.kind == "multilabel":
            vals = torch.randint(0, 2, shape, generator=generator).to(dtype)
        else:
            vals = torch.randint(0, task.num_columns, shape, generator=generator).to(dtype)
        drop = torch.rand(shape, generator=generator) < missing
        t[:, cols] = torch.where(drop, torch.nan, vals)
    return t.to(device)


def random_inputs(
    spec: TaskSpec,
    batch: int,
    *,
    scale: float = 2.0,
    seed: int | None = None,
    dtype=torch.float64,
    device="cpu",
    missing: float = 0.2,
):
    """(logits [B, C], targets [B, J], weights [K]) drawn fresh (non-uniform weights)."""
    g = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, ()).item()))
    logits = (torch.randn(batch, spec.num_columns, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = random_targets(spec, batch, missing=missing, generator=g, dtype=torch.float64)
    weights = torch.rand(spec.num_tasks, generator=g, dtype=torch.float64) + 0.5
    return logits.to(device), targets.to(device), weights.to(dtype).to(device)


@contextlib.contextmanager
def one_thread():
    """Torch and BLAS on one thread for the block: small models and arrays on a shared 2-core machine only
    slow down when two threads spin at every small op (20-30x seen for an MLP fit and a Cholesky)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def flip_each_byte_check(path, load, intact, n: int = 150, seed: int = 0) -> int:
    """Flip one random bit of the file ``path`` at ``n`` random offsets (one at a time, from its clean bytes) and
    load it with ``load(path)``: each try either fails with a one-line ValueError / FileNotFoundError naming the
    file, or loads content that ``intact(loaded)`` accepts (a byte the reader never uses, e.g. a zip timestamp).
    Returns how many failed; the file is left clean."""
    import numpy as np

    clean = Path(path).read_bytes()
    rng = np.random.default_rng(seed)
    errors = 0
    try:
        for at in rng.choice(len(clean), n, replace=False):
            data = bytearray(clean)
            data[at] ^= 1 << int(rng.integers(8))
            Path(path).write_bytes(bytes(data))
            try:
                loaded = load(path)
            except (ValueError, FileNotFoundError) as exc:
                assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), str(exc)
                errors += 1
                continue
            assert intact(loaded), f"a bit flipped at offset {at} changed the content without an error"
    finally:
        Path(path).write_bytes(clean)
    return errors
