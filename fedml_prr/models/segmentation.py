"""Segmentation networks: DeepLab-style with a ResNet-18 backbone (the paper's prostate model) and a
small U-Net.

Both map images ``[B, 3, H, W]`` (for MRI: slices i-1, i, i+1 as channels) to
``(logits [B, C, H, W], bottleneck features [B, feature_dim, h, w])``: the logits are upsampled to
the input size, the features are the lowest-resolution map PRR's prototypes are taken from
(masked means, :func:`fedml_prr.core.segmentation.masked_feature_sums`).  The "classifier" of a
segmentation net is its final 1x1 convolution ``classifier`` (``classifier_key``), a linear
classifier applied at every pixel: FedPer/FedRep keep it local, PFA mixes it row by row like a
classification head.  No pretrained weights are downloaded.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from .geometry import MAX_POOL_2, smallest_input
from .resnet import resnet18_shrinking_layers


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class _ImagePool(nn.Module):
    """ASPP's image-level branch: global average, 1x1 conv + BN + ReLU, broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = _conv_bn_relu(in_channels, out_channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[2:])


class ASPPLite(nn.Module):
    """Atrous spatial pyramid pooling, lite: a 1x1 branch, one 3x3 branch per rate, an image-level
    branch, concatenated and projected to ``out_channels`` (BN + ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        branches = [_conv_bn_relu(in_channels, out_channels, kernel=1)]
        branches += [_conv_bn_relu(in_channels, out_channels, kernel=3, dilation=int(r)) for r in rates]
        branches.append(_ImagePool(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = _conv_bn_relu(len(branches) * out_channels, out_channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabResNet18(nn.Module):
    """DeepLab-v3-style segmentation net on a randomly initialised torchvision ResNet-18.

    Output stride 16: the last stage (``layer4``) runs at stride 1 with dilation 2, as DeepLab
    does.  ASPP-lite head, then a 3x3 conv + BN + ReLU gives the bottleneck feature map
    (``feature_dim`` channels, 1/16 of the input; 1/8 with ``small_input``) and a 1x1 conv, the
    classifier, gives the logits, bilinearly upsampled to the input size.

    Parameters
    ----------
    num_classes:
        ``C`` output channels (2 for prostate vs background).
    feature_dim:
        Channels of the ASPP output and of the bottleneck feature.
    atrous_rates:
        Dilation of each 3x3 ASPP branch (DeepLab-v3 at stride 16: 6, 12, 18; the lite head keeps two).
    small_input:
        For 32-64 px slices: a 3x3 stride-1 stem without max-pool (output stride 4 instead of 16).
    """

    classifier_key: str = "classifier.weight"

    def __init__(self, num_classes: int, *, feature_dim: int = 128, atrous_rates: Sequence[int] = (6, 12),
                 small_input: bool = False) -> None:
        super().__init__()
        if num_classes < 1 or feature_dim < 1:
            raise ValueError("num_classes and feature_dim must be positive")
        self.num_classes, self.feature_dim = num_classes, feature_dim
        backbone = resnet18(weights=None)
        if small_input:
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
            backbone.maxpool = nn.Identity()
        block = backbone.layer4[0]  # stride 2 -> 1, dilate the stage instead (torchvision's BasicBlock
        block.conv1.stride = (1, 1)  # refuses dilation > 1, so set it by hand)
        block.downsample[0].stride = (1, 1)
        for b in backbone.layer4:
            for conv in (b.conv1, b.conv2):
                conv.dilation, conv.padding = (2, 2), (2, 2)
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (backbone.layer1, backbone.layer2,
                                                              backbone.layer3, backbone.layer4)
        self.aspp = ASPPLite(512, feature_dim, atrous_rates)
        self.bottleneck = _conv_bn_relu(feature_dim, feature_dim)
        self.classifier = nn.Conv2d(feature_dim, num_classes, kernel_size=1)

    @staticmethod
    def min_image_size(*, small_input: bool = False, **options: object) -> int:
        """Smallest square input: 1 px (stem and stages 2-3 are padded strided layers; the dilated
        ``layer4`` and the ASPP branches keep the size)."""
        return smallest_input(resnet18_shrinking_layers(small_input=small_input, strided_stages=2))

    @staticmethod
    def image_size_multiple(**options: object) -> int:
        """Inputs may have any side (the logits are resized to the input)."""
        return 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, C, H, W], bottleneck features [B, feature_dim, h, w])``."""
        size = x.shape[2:]
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        features = self.bottleneck(self.aspp(x))
        logits = F.interpolate(self.classifier(features), size=size, mode="bilinear", align_corners=False)
        return logits, features


class UNetSmall(nn.Module):
    """A small U-Net: ``depth`` down-sampling stages of two 3x3 conv + BN + ReLU, a bottleneck,
    and the mirrored up path with skip connections; a 1x1 conv classifier.

    The bottleneck feature (``feature_dim = base * 2**depth`` channels, 1/2**depth of the input)
    is returned for the prototypes.

    Parameters
    ----------
    num_classes:
        ``C`` output channels.
    base:
        Channels of the first stage (doubled at every stage).
    depth:
        Number of 2x2 max-pools (input sides must be divisible by ``2**depth``).
    """

    classifier_key: str = "classifier.weight"

    def __init__(self, num_classes: int, *, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or base < 1 or depth < 1:
            raise ValueError("num_classes, base and depth must be positive")
        self.num_classes, self.depth = num_classes, depth
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.feature_dim = widths[-1]
        self.down = nn.ModuleList()
        channels = 3
        for width in widths[:-1]:
            self.down.append(nn.Sequential(_conv_bn_relu(channels, width), _conv_bn_relu(width, width)))
            channels = width
        self.bottom = nn.Sequential(_conv_bn_relu(channels, widths[-1]), _conv_bn_relu(widths[-1], widths[-1]))
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsample.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.up.append(nn.Sequential(_conv_bn_relu(width * 2, width), _conv_bn_relu(width, width)))
        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    @staticmethod
    def min_image_size(*, depth: int = 3, **options: object) -> int:
        """Smallest square input: ``2**depth`` px (``depth`` 2x2 max-pools)."""
        return smallest_input([MAX_POOL_2] * depth)

    @staticmethod
    def image_size_multiple(*, depth: int = 3, **options: object) -> int:
        """Sides must be multiples of ``2**depth`` (each skip connection meets its upsampled map)."""
        return 2 ** depth

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, C, H, W], bottleneck features [B, feature_dim, H/2**depth, W/2**depth])``."""
        if x.shape[2] % 2 ** self.depth or x.shape[3] % 2 ** self.depth:
            raise ValueError(f"unet_small with depth {self.depth} needs sides divisible by {2 ** self.depth}, "
                             f"got {tuple(x.shape[2:])}")
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        features = self.bottom(x)
        x = features
        for upsample, stage, skip in zip(self.upsample, self.up, reversed(skips)):
            x = stage(torch.cat([upsample(x), skip], dim=1))
        return self.classifier(x), features
