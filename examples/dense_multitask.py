"""Bi-level task weighting for a dense-prediction multi-task network, in the style of NYUv2.

A small convolutional encoder-decoder on 16x16 images predicts three dense tasks: per-pixel 4-class
semantic segmentation (cross-entropy), depth (L1 over the pixels where depth is valid) and surface normals
(cosine loss). The task weights lambda are learned by bfdkern's bi-level engine so that a step lowers the
segmentation loss on a validation batch (segmentation is the outer task). Nothing here is specific to
bfdkern's own losses: the losses are this file's, plugged in through :class:`bfdkern.bilevel.Objective`.

    python examples/dense_multitask.py [--steps 30] [--mode fd|jvp|unroll]

prints the three hypergradient modes side by side at the start, then a short table of lambda during
training. Synthetic scenes: a few coloured rectangles at random depths on a tilted plane, so that the
three tasks share structure (boundaries, orientation) but are not the same.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from bfdkern.bilevel import BilevelTrainer, Objective, hypergradient

CLASSES = 4
SIZE = 16


class DenseNet(nn.Module):
    """Encoder-decoder with a shared trunk and three per-pixel heads; returns a dict of predictions."""

    def __init__(self, width: int = 12):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(2 * width, width, 3, padding=1),
            nn.SiLU(),
        )
        self.seg = nn.Conv2d(width, CLASSES, 1)
        self.depth = nn.Conv2d(width, 1, 1)
        self.normal = nn.Conv2d(width, 3, 1)

    def forward(self, image):
        features = self.decoder(self.encoder(image))
        return {"seg": self.seg(features), "depth": self.depth(features), "normal": self.normal(features)}


def dense_losses(outputs: dict, batch: dict) -> torch.Tensor:
    """[3] losses: segmentation cross-entropy (label -1 = unlabelled pixel), depth L1 over valid pixels,
    surface-normal cosine loss 1 - cos(predicted, true)."""
    seg = F.cross_entropy(outputs["seg"], batch["seg"], ignore_index=-1)
    valid = batch["depth_valid"].to(outputs["depth"].dtype)
    depth = ((outputs["depth"] - batch["depth"]).abs() * valid).sum() / valid.sum().clamp(min=1)
    normal = 1 - F.cosine_similarity(outputs["normal"], batch["normal"], dim=1).mean()
    return torch.stack([seg, depth, normal])


class SceneTasks(Objective):
    """The three dense tasks as a bfdkern objective; segmentation is the outer task."""

    names = ("segmentation", "depth", "normals")
    outer = ("segmentation",)

    def inputs(self, batch):
        return (batch["image"],)

    def losses(self, outputs, batch):
        return dense_losses(outputs, batch)


def make_batch(size: int, seed: int, dtype=torch.float32) -> dict:
    """``size`` synthetic scenes: image [B, 3, 16, 16], seg [B, 16, 16] (long, -1 unlabelled), depth and its
    validity mask [B, 1, 16, 16], unit normals [B, 3, 16, 16]."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    images, segs, depths, normals = [], [], [], []
    for _ in range(size):
        tilt = torch.randn(2, generator=g) * 0.3
        depth = 2 + tilt[0] * xs + tilt[1] * ys
        seg = torch.zeros(SIZE, SIZE, dtype=torch.long)
        normal = torch.stack([-tilt[0] * torch.ones_like(xs), -tilt[1] * torch.ones_like(xs), torch.ones_like(xs)])
        for _ in range(3):
            cls = int(torch.randint(1, CLASSES, (1,), generator=g))
            x0, y0 = torch.randint(0, SIZE - 4, (2,), generator=g).tolist()
            w, h = torch.randint(3, 8, (2,), generator=g).tolist()
            seg[y0 : y0 + h, x0 : x0 + w] = cls
            depth[y0 : y0 + h, x0 : x0 + w] = 1 + 0.3 * cls
            normal[:, y0 : y0 + h, x0 : x0 + w] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
        palette = torch.tensor([[0.2, 0.2, 0.2], [0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.3, 0.9]])
        image = palette[seg].permute(2, 0, 1) / depth + 0.05 * torch.randn(3, SIZE, SIZE, generator=g)
        seg[torch.rand(SIZE, SIZE, generator=g) < 0.1] = -1  # unlabelled pixels
        images.append(image)
        segs.append(seg)
        depths.append(depth[None])
        normals.append(F.normalize(normal, dim=0))
    depth = torch.stack(depths)
    return {
        "image": torch.stack(images).to(dtype),
        "seg": torch.stack(segs),
        "depth": depth.to(dtype),
        "depth_valid": torch.rand(depth.shape, generator=g) > 0.2,  # missing depth readings
        "normal": torch.stack(normals).to(dtype),
    }


def compare_modes(model, optimizer, batch_tr, batch_val, weights) -> dict:
    """The hypergradient d l_seg(theta') / d lambda by the three modes (the model is left untouched)."""
    return {
        mode: hypergradient(model, SceneTasks(), batch_tr, batch_val, weights, optimizer, mode=mode).value
        for mode in ("fd", "jvp", "unroll")
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="bi-level task weighting for a dense multi-task network")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--mode", choices=["fd", "jvp", "unroll"], default="jvp")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(0)
    model = DenseNet().double()  # float64 so that the three modes can be compared to round-off
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    weights = torch.ones(3, dtype=torch.float64)
    batch_tr, batch_val = make_batch(args.batch, 1, torch.float64), make_batch(args.batch, 2, torch.float64)
    hypergradients = compare_modes(model, optimizer, batch_tr, batch_val, weights)
    print("hypergradient d l_seg(theta') / d lambda at the start (float64):")
    print(f"  {'mode':<8}" + "".join(f"{n:>15}" for n in SceneTasks.names))
    for mode, value in hypergradients.items():
        print(f"  {mode:<8}" + "".join(f"{v:>15.6e}" for v in value.tolist()))
    exact = hypergradients["unroll"]
    for mode in ("fd", "jvp"):
        err = float((hypergradients[mode] - exact).norm() / exact.norm())
        print(f"  {mode} vs unroll: relative difference {err:.1e}")

    trainer = BilevelTrainer(model, SceneTasks(), optimizer, mode=args.mode, lambda_lr=0.05)
    print(f"\ntraining {args.steps} steps, mode={args.mode} (lambda by Adam, lr 0.05):")
    print(f"  {'step':>5}" + "".join(f"{n:>14}" for n in SceneTasks.names) + f"{'val seg loss':>14}")
    for step in range(1, args.steps + 1):
        batch_tr, batch_val = (
            make_batch(args.batch, 100 + step, torch.float64),
            make_batch(args.batch, 5000 + step, torch.float64),
        )
        record = trainer.step(batch_tr, batch_val)
        if step == 1 or step % 10 == 0:
            row = "".join(f"{v:>14.4f}" for v in record.lambdas.tolist())
            print(f"  {step:>5}{row}{float(record.outer_loss):>14.4f}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
