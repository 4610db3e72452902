"""ResNet-18 backbone (torchvision, randomly initialised) with PRR's 64-d feature head.

The torchvision ``fc`` layer is replaced by ``Identity``; the 512-d pooled output goes through
``fc1`` (no bias) + BatchNorm1d + ReLU to the feature vector, and ``fc2`` (no bias) classifies
it, the same head and forward contract as :class:`~fedml_prr.models.vgg_slim.VGG16Slim`.
Pretrained weights are never downloaded.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn
from torchvision.models import resnet18

from .geometry import Layer, smallest_input

BACKBONE_DIM = 512


def resnet18_shrinking_layers(*, small_input: bool, strided_stages: int = 3) -> List[Layer]:
    """The layers of torchvision's ResNet-18 that can shrink the input: the stem (7x7 stride-2
    convolution, 3x3 stride-2 max-pool; with ``small_input`` none) and the first 3x3 stride-2
    convolution of the last ``strided_stages`` stages (all padded: none shrinks below one pixel)."""
    stem = [] if small_input else [(7, 2, 3, 1), (3, 2, 1, 1)]
    return stem + [(3, 2, 1, 1)] * strided_stages


class ResNet18Features(nn.Module):
    """ResNet-18 returning ``(logits, features)``.

    Parameters
    ----------
    num_classes:
        Number of output logits ``C``.
    feature_dim:
        Size of the feature vector returned next to the logits.
    small_input:
        For 32-px images: replace the 7x7 stride-2 stem by a 3x3 stride-1 convolution and
        drop the stem max-pool (the usual CIFAR variant).

    Notes
    -----
    ``classifier_key`` names the state-dict entry of the final classifier weight,
    shape ``[C, feature_dim]``.
    """

    classifier_key: str = "fc2.weight"

    def __init__(
        self, num_classes: int, *, feature_dim: int = 64, small_input: bool = False
    ) -> None:
        super().__init__()
        if num_classes < 1 or feature_dim < 1:
            raise ValueError("num_classes and feature_dim must be positive")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        backbone = resnet18(weights=None)
        if small_input:
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
            backbone.maxpool = nn.Identity()
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.fc1 = nn.Linear(BACKBONE_DIM, feature_dim, bias=False)
        self.bn_fc1 = nn.BatchNorm1d(feature_dim)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(feature_dim, num_classes, bias=False)

    @staticmethod
    def min_image_size(*, small_input: bool = False, **options: object) -> int:
        """Smallest square input: 1 px (every strided layer is padded; the global pool follows)."""
        return smallest_input(resnet18_shrinking_layers(small_input=small_input))

    @staticmethod
    def image_size_multiple(**options: object) -> int:
        """Inputs may have any side."""
        return 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify a batch.

        Parameters
        ----------
        x:
            RGB images ``[B, 3, H, W]``.

        Returns
        -------
        logits:
            ``[B, num_classes]``.
        features:
            ``[B, feature_dim]``, the post-ReLU (non-negative) input of ``fc2``.
        """
        features = self.relu(self.bn_fc1(self.fc1(self.backbone(x))))
        return self.fc2(features), features
