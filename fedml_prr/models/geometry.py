"""Input-size arithmetic of convolutional networks: the smallest input a chain of layers accepts.

A layer that can shrink the spatial size is ``(kernel, stride, padding, dilation)``; its output
side is ``floor((n + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1`` (PyTorch's
convolution and max-pool rule, ``ceil_mode=False``), and it needs an output of at least one
pixel.  Layers that keep the size ("same" padding, stride 1) can be left out.
"""

from __future__ import annotations

from typing import Sequence, Tuple

#: ``(kernel, stride, padding, dilation)`` of a convolution or pooling layer.
Layer = Tuple[int, int, int, int]

#: The 2x2, stride-2 max-pool of VGG and U-Net.
MAX_POOL_2 = (2, 2, 0, 1)


def smallest_input(layers: Sequence[Layer]) -> int:
    """The smallest side ``n >= 1`` for which every layer of ``layers`` (applied in order) outputs
    at least one pixel (walking back from one output pixel)."""
    size = 1
    for kernel, stride, padding, dilation in reversed(layers):
        size = max(1, (size - 1) * stride + dilation * (kernel - 1) + 1 - 2 * padding)
    return size
