"""The embedded demo's sizes and hyper-parameters (plain data: ``bfdkern demo --help`` shows its defaults
without importing torch). The demo itself is :mod:`bfdkern.recipes.demo`."""

from __future__ import annotations

from dataclasses import dataclass

from bfdkern.tasks import blades_spec
from bfdkern.training.config import PretrainConfig


@dataclass
class DemoSettings:
    """Sizes and hyper-parameters of the demo (defaults: about 70 s on an idle 2-core CPU).

    24 epochs (768 steps): at 8 epochs the outer task l_1 and the region task stayed at chance;
    at 24 both fall well below it (about 45% and 74% of chance) and lambda of l_1 grows about 4x.

    The demo fixes its own settings where the pretraining defaults (the paper's) do not suit a small CNN on
    a few hundred CPU images: the learning rates, and one-column ordinal heads (the demo's figures were made
    with them; the paper's 3-level heads are the pretraining default)."""

    train_photos: int = 512
    fit_photos: int = 192
    test_photos: int = 128
    fake_images: int = 192
    image_size: int = 64
    batch_size: int = 32
    epochs: int = 24
    lr: float = 2e-3
    weight_decay: float = 1e-3
    lambda_lr: float = 1e-2
    feature_dim: int = 128
    mode: str = "fd"
    components: int = 2
    jpeg_quality: int = 95
    eval_samples: int = 256
    workers: int = 2
    threads: int = 1
    seed: int = 0
    max_steps: int | None = None
    ordinal_levels: int = 1

    def spec(self):
        """The demo's task spec: :func:`~bfdkern.tasks.blades_spec` with ``ordinal_levels``."""
        return blades_spec(ordinal_levels=self.ordinal_levels)

    def pretrain_config(self, data, **overrides):
        """The demo's pretraining run (small CNN on the CPU, no intermediate checkpoints) as a
        :class:`~bfdkern.training.PretrainConfig`; ``overrides`` replace fields (benchmarks)."""
        fields = dict(
            data=str(data),
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            lambda_lr=self.lambda_lr,
            mode=self.mode,
            image_size=self.image_size,
            backbone="small",
            feature_dim=self.feature_dim,
            seed=self.seed,
            max_steps=self.max_steps,
            device="cpu",
            workers=self.workers,
            checkpoint_every=0,
            ordinal_levels=self.ordinal_levels,
        )
        return PretrainConfig(**{**fields, **overrides})
