"""CNND (Wang et al., 2020): a supervised binary ResNet trained on real vs generated images with Gaussian
blur and JPEG re-compression augmentation, each applied with probability 0.5 (sigma ~ U[0, 3] pixels,
quality ~ U{30 ... 100}), as in the original "Blur+JPEG (0.5)" model.

Convention: the score is P(fake); the positive class is **fake**, as for the binary MLP detector.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn
from tqdm.auto import tqdm

from bfdkern.atomic import atomic_torch_save
from bfdkern.data.decode import decode_image
from bfdkern.data.transforms import to_tensor
from bfdkern.detect.choices import ARCHES
from bfdkern.detect.encoder import torchvision_encoder
from bfdkern.models.encoder import load_fitting
from bfdkern.models.files import Fields, SavedFileError, state_dict_field, torch_load, verify_checksum, with_checksum
from bfdkern.models.normalization import IMAGENET_MEAN, IMAGENET_STD, checked_statistics


@dataclass(frozen=True)
class Augmentation:
    """One draw of the CNND augmentation: ``blur_sigma`` (pixels) and ``jpeg_quality``, None when not applied."""

    blur_sigma: float | None
    jpeg_quality: int | None


class BlurJpeg:
    """The CNND augmentation: Gaussian blur with probability ``blur_p`` (sigma ~ U[0, ``max_sigma``]), then JPEG
    re-encoding with probability ``jpeg_p`` (quality ~ U{``min_quality`` ... 100}), independently."""

    def __init__(self, blur_p: float = 0.5, jpeg_p: float = 0.5, max_sigma: float = 3.0, min_quality: int = 30):
        for name, p in (("blur_p", blur_p), ("jpeg_p", jpeg_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.blur_p, self.jpeg_p = float(blur_p), float(jpeg_p)
        self.max_sigma, self.min_quality = float(max_sigma), int(min_quality)

    def draw(self, rng: np.random.Generator) -> Augmentation:
        """Draw which augmentations apply and their strengths."""
        blur = float(rng.uniform(0.0, self.max_sigma)) if rng.random() < self.blur_p else None
        jpeg = int(rng.integers(self.min_quality, 101)) if rng.random() < self.jpeg_p else None
        return Augmentation(blur, jpeg)

    @staticmethod
    def apply(image: Image.Image, aug: Augmentation) -> Image.Image:
        """An RGB PIL image with ``aug`` applied (blur first, then JPEG)."""
        if aug.blur_sigma is not None:
            image = image.filter(ImageFilter.GaussianBlur(aug.blur_sigma))
        if aug.jpeg_quality is not None:
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=aug.jpeg_quality)
            buf.seek(0)
            image = Image.open(buf).convert("RGB")
        return image


def _network(arch: str) -> nn.Module:
    import torchvision  # lazy: heavy (torchvision, ~1.4 s), only when a network is built

    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {list(ARCHES)}, got {arch!r}")
    net = torchvision.models.get_model(arch, weights=None)
    net.fc = nn.Linear(net.fc.in_features, 1)
    return net


class CNNDetector:
    """CNND: ResNet (``resnet50`` as in the original; ``resnet18`` for small runs) with one logit, P(fake).

    Args:
        arch: ``resnet50`` | ``resnet18``.
        size: input side in pixels (images: centred square, resized).
        backbone_weights: optional torchvision state dict to start from (the original starts from ImageNet
            weights; nothing is downloaded, so give the file).
        seed: initialisation, augmentation draws and batch order.
        mean, std: the input statistics (ImageNet's, as the torchvision classifier it is; stored in its file).
    """

    kind = "cnnd"
    positive_class = "fake"
    score_name = "P(fake)"
    threshold = 0.5

    def __init__(
        self,
        arch: str = "resnet50",
        size: int = 224,
        backbone_weights=None,
        seed: int = 0,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ):
        mean, std = checked_statistics(mean, std, self.kind)
        self.params = {"arch": arch, "size": int(size), "seed": int(seed), "mean": list(mean), "std": list(std)}
        torch.manual_seed(seed)
        self.net = self.build_network(arch)
        if backbone_weights is not None:
            # The trunk's weights; the head (and any extra blocks) keep their random initialisation.
            trunk = torchvision_encoder(arch, backbone_weights).state_dict()
            unexpected = self.net.load_state_dict(trunk, strict=False).unexpected_keys
            if unexpected:
                raise ValueError(f"{backbone_weights}: {len(unexpected)} parameters do not fit, e.g. {unexpected[:3]}")
        self.augment = self.training_augmentation()

    @staticmethod
    def build_network(arch: str) -> nn.Module:
        """The classifier: images [B, 3, H, W] (ImageNet-normalised) -> one logit [B, 1]; the trunk's layers
        keep torchvision's names (so ``backbone_weights`` load) and the head is ``fc``."""
        return _network(arch)

    @staticmethod
    def training_augmentation() -> BlurJpeg:
        """The augmentation applied to every training image."""
        return BlurJpeg()

    def _batch(self, images: Sequence[Image.Image], device) -> torch.Tensor:
        x = torch.stack([to_tensor(im, size=self.params["size"]) for im in images]).to(device)
        mean = torch.tensor(self.params["mean"], device=device).view(1, 3, 1, 1)
        return (x - mean) / torch.tensor(self.params["std"], device=device).view(1, 3, 1, 1)

    def fit(
        self,
        real_paths,
        fake_paths,
        *,
        epochs: int = 5,
        batch_size: int = 32,
        lr: float = 1e-4,
        device: str | None = None,
        workers: int = 2,
        progress: bool = True,
    ) -> CNNDetector:
        """Train on real (label 0) and fake (label 1) image files with the augmentation, Adam, binary
        cross-entropy. Images are decoded and augmented batch by batch on ``workers`` threads while the
        previous batch trains (memory stays one batch ahead, whatever the collection's size); the
        augmentation draws come from the seed in batch order, so a run is the same for any ``workers``.
        Returns self."""
        paths = [Path(p) for p in real_paths] + [Path(p) for p in fake_paths]
        labels = np.r_[np.zeros(len(real_paths)), np.ones(len(fake_paths))].astype(np.float32)
        if not len(real_paths) or not len(fake_paths):
            raise ValueError(f"{self.kind} needs both real and fake training images")
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("workers", workers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        rng = np.random.default_rng(self.params["seed"])
        net = self.net.to(dev).train()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        batches = []
        for _ in range(epochs):
            order = rng.permutation(len(paths))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                if len(idx) >= 2:  # BatchNorm needs two samples
                    batches.append((idx, [self.augment.draw(rng) for _ in idx]))
        # One thread assembles the next batch (its images decoded on the pool) while this one trains.
        with (
            ThreadPoolExecutor(workers) as pool,
            ThreadPoolExecutor(1) as assembler,
            tqdm(total=len(batches), desc=self.kind, unit="batch", disable=not progress, leave=False) as bar,
        ):

            def prepare(k):
                idx, augs = batches[k]
                images = list(pool.map(lambda ia: self._training_image(paths[ia[0]], ia[1]), zip(idx, augs)))
                return self._batch(images, "cpu"), torch.from_numpy(labels[idx])

            ahead = assembler.submit(prepare, 0) if batches else None
            for k in range(len(batches)):
                x, y = ahead.result()
                ahead = assembler.submit(prepare, k + 1) if k + 1 < len(batches) else None
                loss = loss_fn(net(x.to(dev)).squeeze(1), y.to(dev))
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
        self.net = net.cpu().eval()
        return self

    def _training_image(self, path: Path, aug: Augmentation) -> Image.Image:
        return self.augment.apply(decode_image(path), aug)

    @torch.no_grad()
    def score_images(self, images: Sequence, device: str | None = None) -> np.ndarray:
        """RGB images (PIL or uint8 [H, W, 3]; the centred square is resized to ``size``) -> [N] P(fake)
        (float64), no augmentation."""
        dev = torch.device(device or "cpu")
        net = self.net.to(dev).eval()
        try:
            return torch.sigmoid(net(self._batch(list(images), dev)).squeeze(1)).double().cpu().numpy()
        finally:
            self.net = net.cpu()

    def score_files(self, paths, batch_size: int = 32, device: str | None = None) -> np.ndarray:
        """Image files -> [N] P(fake) (float64), no augmentation; an unreadable file is an error naming it."""
        paths = list(paths)
        out = [
            self.score_images([decode_image(p) for p in paths[start : start + batch_size]], device)
            for start in range(0, len(paths), batch_size)
        ]
        return np.concatenate(out)

    def decide(self, scores) -> np.ndarray:
        """Scores [N] -> [N] int: 1 = fake (P(fake) > 0.5)."""
        return (np.asarray(scores) > self.threshold).astype(np.int64)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights and parameters (input statistics included) to ``path`` atomically: a torch file
        readable with ``weights_only``, with a checksum of its payload."""
        payload = {"kind": self.kind, "params": json.dumps(self.params), "state": self.net.state_dict()}
        return atomic_torch_save(with_checksum(payload), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CNNDetector:
        """Inverse of :meth:`save`, validated (fields, finite weights, the checksum when the file has one); a file
        that is not a detector of this kind is a ValueError naming it (and the field)."""
        data = torch_load(path, "cpu", f"{cls.kind} detector")
        if not isinstance(data, dict) or data.get("kind") != cls.kind:
            found = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise SavedFileError(f"{path}: not a {cls.kind} detector file (it holds {found!r})")
        verify_checksum(data, path)
        fields = Fields(path, data)
        text = fields.string("params")
        try:
            det = cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            fields.fail("params", f"cannot build a {cls.kind} detector ({exc})")
        load_fitting(det.net, state_dict_field(fields, "state"), path, f"the {cls.kind} network")
        det.net.eval()
        return det
