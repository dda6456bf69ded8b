"""A tiny stand-in encoder for the detection tests: anything with ``features(x) -> [B, D]`` works."""

import torch
import torch.nn.functional as F
from torch import nn


class TinyEncoder(nn.Module):
    """[B, 3, H, W] in [0, 1] -> L2-normalised [B, dim]: one conv on pixel differences (noise-sensitive),
    global statistics, a linear map. Counts the images it has seen (to test the cache)."""

    def __init__(self, dim: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.proj = nn.Linear(16, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.seen = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        h = self.conv(x)
        stats = torch.cat([h.mean((2, 3)), h.abs().mean((2, 3))], 1)
        return F.normalize(self.proj(stats), dim=1)
