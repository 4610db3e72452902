"""Batched, seeded training augmentation on ``uint8`` image tensors (PRR_METHOD.md section 4).

The reference pipeline (albumentations, one image at a time) is reproduced batch-wise:

1. vertical flip (p 0.5), horizontal flip (p 0.5);
2. additive brightness shift, uniform in +-0.2 of the full range (p 0.75);
3. one of {median blur 3x3, Gaussian blur 3x3 (sigma 0.8), Gaussian noise with variance uniform in
   [10, 50] on the 0-255 scale}, chosen uniformly (p 0.7);
4. shift (+-0.1 of the size), scale (1 +- 0.1), rotation (+-15 degrees) with reflection padding
   (p 0.85), via ``affine_grid`` + ``grid_sample``.

Every random number comes from a caller-owned CPU ``torch.Generator`` and is then moved to the
images' device, so one generator state gives the same random draws on any device (image ops on
GPU may still differ from CPU in the last float bits). The same state always gives the same output.
On CUDA nothing here makes the host wait: the draws and the indices of the samples each operation
applies to are computed on the CPU and sent with pinned, non-blocking copies
(:func:`~fedml_prr.devices.to_device`), and every size is known on the host.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F

from ..devices import to_device

_P_FLIP, _P_BRIGHTNESS, _P_BLUR_OR_NOISE, _P_AFFINE = 0.5, 0.75, 0.7, 0.85
_BRIGHTNESS, _SHIFT, _SCALE, _ROTATE_DEG = 0.2, 0.1, 0.1, 15.0
_NOISE_VAR = (10.0, 50.0)  # on the 0-255 scale
_GAUSS_SIGMA = 0.8  # OpenCV's default sigma for a 3x3 kernel


def _check(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [B, 3, H, W]`` -> ``float32 [B, 3, H, W]`` in ``[-1, 1]`` (``x / 127.5 - 1``)."""
    _check(images)
    return images.float() / 127.5 - 1.0


# Paeth's 19-exchange network: after it, p[4] is the median of p[0..8] (the 5th smallest)
_MEDIAN9_NETWORK = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8),
                    (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median_blur3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median with reflected borders, as 19 elementwise min/max exchanges of the 9 shifted
    views (exactly the value ``torch.median`` over the 9 neighbours gives, several times faster)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[2], x.shape[3]
    p = [padded[:, :, i:i + h, j:j + w].contiguous() for i in range(3) for j in range(3)]  # private copies
    for a, b in _MEDIAN9_NETWORK:
        low = torch.minimum(p[a], p[b])
        torch.maximum(p[a], p[b], out=p[b])
        p[a] = low
    return p[4]


@functools.lru_cache(maxsize=None)
def _gaussian_kernel3(device: torch.device) -> torch.Tensor:
    """The 3x3 Gaussian kernel ``[3, 1, 3, 3]``, computed on the CPU once and kept on ``device``."""
    k = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * _GAUSS_SIGMA**2))
    k = torch.outer(k, k) / k.sum() ** 2
    return to_device(k.expand(3, 1, 3, 3).contiguous(), device)


def _gaussian_blur3(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), _gaussian_kernel3(x.device), groups=3)


def _affine_theta(u: torch.Tensor) -> torch.Tensor:
    """``[M, 2, 3]`` output->input maps for ``affine_grid`` from uniforms ``u [M, 4]`` in ``[0, 1)``."""
    shift = (2 * u[:, :2] - 1) * _SHIFT * 2  # fraction of the size -> normalised [-1, 1] units
    scale = 1 + (2 * u[:, 2] - 1) * _SCALE
    angle = (2 * u[:, 3] - 1) * math.radians(_ROTATE_DEG)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # R(-a) / s
    return torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], dim=2)


@dataclass(frozen=True)
class AugmentDraws:
    """The random draws of one augmented batch, made on the CPU (see :func:`draw_augmentation`).

    Per sample: ``flip_v``, ``flip_h`` (bool ``[B]``), ``brightness`` (float ``[B]``, 0 when not
    applied), ``blur_or_noise`` (long ``[B]``: -1 none, 0 median, 1 Gaussian blur, 2 noise),
    ``affine`` (bool ``[B]``).  ``noise`` holds the scaled noise of the noise samples in
    sample order ``[N_noise, 3, H, W]``; ``theta`` the affine maps of the affine samples
    ``[N_affine, 2, 3]``.
    """

    flip_v: torch.Tensor
    flip_h: torch.Tensor
    brightness: torch.Tensor
    blur_or_noise: torch.Tensor
    affine: torch.Tensor
    noise: torch.Tensor
    theta: torch.Tensor

    @staticmethod
    def concat(draws: Sequence["AugmentDraws"]) -> "AugmentDraws":
        """The draws of the concatenation of the batches of ``draws`` (in that order)."""
        return AugmentDraws(*(torch.cat([getattr(d, f.name) for d in draws]) for f in fields(AugmentDraws)))


def draw_augmentation(batch_size: int, image_shape: Sequence[int], generator: torch.Generator) -> AugmentDraws:
    """Every random number of one batch's augmentation, drawn from ``generator`` (CPU).

    ``image_shape`` is ``(3, H, W)``.  The generator is advanced exactly as by
    :func:`augment_batch` on a batch of ``batch_size`` such images.
    """
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    u = torch.rand(batch_size, 8, generator=generator)  # flips, brightness x2, blur/noise x3, affine
    flip = u[:, :2] < _P_FLIP
    delta = torch.where(u[:, 2] < _P_BRIGHTNESS, (2 * u[:, 3] - 1) * _BRIGHTNESS, 0.0)
    choice = torch.where(u[:, 4] < _P_BLUR_OR_NOISE, (u[:, 5] * 3).long().clamp(max=2), -1)
    n_noise = int((choice == 2).sum())
    noise = torch.zeros(0, *image_shape)
    if n_noise:
        var = _NOISE_VAR[0] + (_NOISE_VAR[1] - _NOISE_VAR[0]) * u[choice == 2, 6]
        noise = torch.randn((n_noise, *image_shape), generator=generator) * (var.sqrt() / 255).view(-1, 1, 1, 1)
    affine = u[:, 7] < _P_AFFINE
    theta = torch.zeros(0, 2, 3)
    if affine.any():
        theta = _affine_theta(torch.rand(int(affine.sum()), 4, generator=generator))
    return AugmentDraws(flip[:, 0], flip[:, 1], delta, choice, affine, noise, theta)


def apply_augmentation(images: torch.Tensor, draws: AugmentDraws) -> torch.Tensor:
    """Augment ``images`` (``uint8 [B, 3, H, W]``, any device) with ``draws``; the input is not modified.

    Every operation is per sample, so one call on several clients' concatenated batches (with
    :meth:`AugmentDraws.concat` of their draws) equals one call per client.
    """
    _check(images)
    device = images.device
    x = images.float() / 255.0
    x = torch.where(to_device(draws.flip_v, device).view(-1, 1, 1, 1), x.flip(2), x)
    x = torch.where(to_device(draws.flip_h, device).view(-1, 1, 1, 1), x.flip(3), x)
    x = (x + to_device(draws.brightness, device).view(-1, 1, 1, 1)).clamp(0, 1)

    # which samples each operation applies to: found on the host (the draws are CPU tensors), so
    # every size below is known there and nothing waits for the device
    median, gauss, noise = (torch.nonzero(draws.blur_or_noise == c).flatten() for c in range(3))
    x = x.clone()
    if len(median):
        median = to_device(median, device)
        x[median] = _median_blur3(x[median])
    if len(gauss):
        gauss = to_device(gauss, device)
        x[gauss] = _gaussian_blur3(x[gauss])
    if len(noise):
        noise = to_device(noise, device)
        x[noise] = (x[noise] + to_device(draws.noise, device)).clamp(0, 1)

    affine = torch.nonzero(draws.affine).flatten()
    if len(affine):
        affine = to_device(affine, device)
        grid = F.affine_grid(to_device(draws.theta, device), [len(affine), *x.shape[1:]], align_corners=False)
        x[affine] = F.grid_sample(x[affine], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x.clamp(0, 1) * 2.0 - 1.0


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch; the input is not modified.

    Parameters
    ----------
    images:
        ``uint8 [B, 3, H, W]`` on any device.
    generator:
        A CPU generator; it is advanced, so successive calls give fresh augmentations.

    Returns
    -------
    ``float32 [B, 3, H, W]`` in ``[-1, 1]`` on ``images.device``.
    """
    _check(images)
    return apply_augmentation(images, draw_augmentation(images.shape[0], images.shape[1:], generator))


def augment_segmentation_batch(images: torch.Tensor, masks: torch.Tensor,
                               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same pipeline for segmentation: geometry applied identically to images and masks.

    One set of draws (:func:`draw_augmentation`) augments the images exactly as
    :func:`augment_batch` would; the flips and the shift/scale/rotation act on the masks too
    (resampled with nearest neighbour and the same reflection padding, so labels stay integers
    and follow the image). Brightness and blur or noise act on the image only.

    Parameters
    ----------
    images:
        ``uint8 [B, 3, H, W]``.
    masks:
        ``[B, H, W]`` class indices (any integer dtype).

    Returns
    -------
    ``(float32 [B, 3, H, W] in [-1, 1], int64 [B, H, W])`` on ``images.device``.
    """
    _check(images)
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"masks must be [B, H, W] matching images {tuple(images.shape)}, got {tuple(masks.shape)}")
    draws = draw_augmentation(images.shape[0], images.shape[1:], generator)
    device = images.device
    y = masks.to(device=device, dtype=torch.float32)[:, None]
    y = torch.where(to_device(draws.flip_v, device).view(-1, 1, 1, 1), y.flip(2), y)
    y = torch.where(to_device(draws.flip_h, device).view(-1, 1, 1, 1), y.flip(3), y)
    affine = torch.nonzero(draws.affine).flatten()
    if len(affine):
        affine = to_device(affine, device)
        grid = F.affine_grid(to_device(draws.theta, device), [len(affine), *y.shape[1:]], align_corners=False)
        y = y.clone()
        y[affine] = F.grid_sample(y[affine], grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return apply_augmentation(images, draws), y[:, 0].round().long()
