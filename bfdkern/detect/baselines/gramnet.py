"""GramNet (Liu et al., 2020): a supervised binary ResNet whose classifier also sees global texture statistics,
Gram matrices of intermediate feature maps summarised by small "Gram blocks".

A Gram block projects a feature map [B, C, H, W] to 32 channels, forms their Gram matrix [B, 32, 32] (channel
correlations over all positions, i.e. texture independent of layout), and summarises it with two strided
convolutions and global pooling into 32 numbers. Blocks read the stem and the first three ResNet stages; their
outputs are concatenated with the ResNet's pooled features before the final logit. Trained like
:class:`~bfdkern.detect.baselines.CNNDetector` (same loop, file format and P(fake) score), without the blur
and JPEG augmentation.
"""

from __future__ import annotations

import torch
from torch import nn

from bfdkern.detect.baselines.cnnd import ARCHES, BlurJpeg, CNNDetector

GRAM_CHANNELS = 32


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, C]: channel inner products averaged over the H x W positions."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


class GramBlock(nn.Module):
    """[B, C, H, W] feature map -> [B, 32] summary of its Gram matrix."""

    def __init__(self, in_channels: int, channels: int = GRAM_CHANNELS):
        super().__init__()
        self.project = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.summarise = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.summarise(gram_matrix(self.project(x)).unsqueeze(1))


class GramResNet(nn.Module):
    """A torchvision ResNet (random init; layer names kept) with Gram blocks on the stem and layers 1-3; one logit."""

    def __init__(self, arch: str = "resnet50"):
        super().__init__()
        import torchvision  # lazy: heavy (torchvision, ~1.4 s), only when a network is built

        if arch not in ARCHES:
            raise ValueError(f"arch must be one of {list(ARCHES)}, got {arch!r}")
        net = torchvision.models.get_model(arch, weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        widths = [net.conv1.out_channels] + [
            getattr(net, f"layer{i}")[0].conv1.in_channels for i in (2, 3, 4)
        ]  # layers 1-3 out
        self.gram = nn.ModuleList(GramBlock(c) for c in widths)
        self.fc = nn.Linear(net.fc.in_features + GRAM_CHANNELS * len(widths), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] ImageNet-normalised -> logits [B, 1]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        texture = [self.gram[0](x)]
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3)):
            x = layer(x)
            texture.append(self.gram[i + 1](x))
        x = self.layer4(x).mean(dim=(2, 3))
        return self.fc(torch.cat([x, *texture], dim=1))


class GramNetDetector(CNNDetector):
    """GramNet: :class:`GramResNet` trained on real vs generated images; score P(fake)."""

    kind = "gramnet"

    @staticmethod
    def build_network(arch: str) -> nn.Module:
        return GramResNet(arch)

    @staticmethod
    def training_augmentation() -> BlurJpeg:
        return BlurJpeg(blur_p=0.0, jpeg_p=0.0)
