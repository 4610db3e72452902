"""VGG16-slim: the dermoscopy classifier of PRR (Chen et al., IEEE TMI 2022, spec section 4).

Thirteen 3x3 convolutions in five blocks, each block closed by a 2x2 max-pool, then a global
average pool, a 64-d feature head and a bias-free linear classifier. The global pool makes the
network independent of the input size (32 px and up; five pools need at least 32 px).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .geometry import MAX_POOL_2, smallest_input

BLOCKS: tuple[tuple[int, ...], ...] = (
    (32, 32),
    (64, 64),
    (128, 128, 128),
    (128, 128, 128),
    (256, 256, 256),
)


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, never below 8."""
    return max(8, int(round(channels * width)))


def _conv_block(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for out_channels in widths:
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class VGG16Slim(nn.Module):
    """VGG16-slim with a 64-d feature head; forward returns ``(logits, features)``.

    At ``width=1.0``, ``feature_dim=64`` and 3 input channels the model has exactly
    ``2,370,912 + 64 * num_classes`` trainable parameters (2,371,360 for 7 classes), the
    spec's "about 2.4 M"; at ``width=0.5`` it has about 0.60 M.

    Parameters
    ----------
    num_classes:
        Number of output logits ``C``.
    in_channels:
        Channels of the input image.
    width:
        Multiplier applied to every convolution's channel count (rounded, at least 8).
    feature_dim:
        Size of the feature vector returned next to the logits (64 in the paper).

    Notes
    -----
    ``classifier_key`` names the state-dict entry of the final classifier weight,
    shape ``[C, feature_dim]``; personalisation code keeps it local.
    """

    classifier_key: str = "fc2.weight"

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        width: float = 1.0,
        feature_dim: int = 64,
    ) -> None:
        super().__init__()
        if num_classes < 1 or feature_dim < 1 or width <= 0:
            raise ValueError("num_classes, feature_dim and width must be positive")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        blocks = []
        channels = in_channels
        for widths in BLOCKS:
            scaled = [scaled_channels(c, width) for c in widths]
            blocks.append(_conv_block(channels, scaled))
            channels = scaled[-1]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, feature_dim, bias=False)
        self.bn_fc1 = nn.BatchNorm1d(feature_dim)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(feature_dim, num_classes, bias=False)
        self._init_weights()

    @staticmethod
    def min_image_size(**options: object) -> int:
        """Smallest square input (32 px): five 2x2 max-pools, whatever the options."""
        return smallest_input([MAX_POOL_2] * len(BLOCKS))

    @staticmethod
    def image_size_multiple(**options: object) -> int:
        """Inputs may have any side at least :meth:`min_image_size` (the pools floor)."""
        return 1

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify a batch.

        Parameters
        ----------
        x:
            Images ``[B, in_channels, H, W]`` with ``H, W >= 32``.

        Returns
        -------
        logits:
            ``[B, num_classes]``.
        features:
            ``[B, feature_dim]``, the post-ReLU (non-negative) input of ``fc2``.
        """
        pooled = self.pool(self.features(x)).flatten(1)
        features = self.relu(self.bn_fc1(self.fc1(pooled)))
        return self.fc2(features), features
