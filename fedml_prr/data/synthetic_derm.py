"""``derm_synthetic``: a procedurally generated 4-client dermoscopy-like federation (no download).

It reproduces the two phenomena PRR targets, so the whole pipeline runs on a fresh machine:

* **Skewed, client-specific class imbalance.** Clients A-D and classes nv/bkl/mel follow the PRR
  split (DATASETS.md section A, :data:`PRR_CLASS_COUNTS`) scaled by ``scale`` and rounded half
  up, keeping at least one image wherever the original count is positive (client B keeps a few
  mel). Client B is ~96 % nv; A, C, D are mixed.
* **Per-client feature shift.** Each client has a fixed imaging "device" (:data:`DEVICES`,
  independent of the seed): white-balance gain, illumination gradient and vignetting, contrast,
  blur and sensor noise, applied to all of its images.

Image model (rendered at twice ``image_size`` and downsampled with antialiasing). Each lesion
property is drawn from a class-conditional normal distribution; the distributions overlap, so
the task is learnable but not trivial: a 3-layer CNN trained for 10 epochs on the pooled train
splits (defaults) reaches about 0.82 test accuracy (majority class: 0.74) and macro-F1 about 0.65:

* skin background: per-image skin tone with low- and mid-frequency texture;
* lesion shape: an ellipse whose radius is modulated by low angular harmonics (asymmetry) and
  high ones (border irregularity), with a soft edge;
* lesion colour: a mix of tan and brown ("darkness"), multiplicative mottling, dark-brown blotches
  and blue-grey regions covering class-dependent area fractions.

Typical class profiles: nv round, regular, uniform brown; bkl lighter/tan, strongly mottled
("waxy"), moderately irregular; mel asymmetric, irregular, multi-coloured with dark and blue-grey
regions. Everything is drawn from a ``torch.Generator`` seeded per (seed, client, split): the same
seed gives bit-identical tensors. Rendering is vectorised over the batch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fedml_prr.data.datasets import register_dataset
from fedml_prr.data.federation import SPLITS, ClientData, Federation, FederationInfo, ImageSplit
from fedml_prr.data.selection import fixed_class_names, select_clients

logger = logging.getLogger(__name__)

CLASS_NAMES = ("nv", "bkl", "mel")

PRR_CLASS_COUNTS: dict[str, dict[str, tuple[int, int, int]]] = {
    "A": {"train": (1282, 333, 476), "valid": (183, 47, 68), "test": (367, 95, 136)},
    "B": {"train": (2604, 87, 17), "valid": (372, 12, 2), "test": (744, 25, 5)},
    "C": {"train": (562, 343, 239), "valid": (80, 49, 34), "test": (161, 98, 69)},
    "D": {"train": (960, 178, 262), "valid": (137, 25, 37), "test": (275, 51, 75)},
}
"""(nv, bkl, mel) image counts per client and split of the PRR reference split."""


@dataclass(frozen=True)
class ImagingDevice:
    """A client's imaging device; all values act on images in ``[0, 1]``."""

    gain: tuple[float, float, float]  # per-channel white-balance multiplier (R, G, B)
    gradient: float  # strength of a linear illumination ramp across the image
    gradient_angle: float  # its direction, degrees
    vignette: float  # darkening towards the corners
    contrast: float  # 1 = unchanged, around the per-image mean
    blur_sigma: float  # Gaussian blur, output pixels (0 = none)
    noise_std: float  # additive Gaussian sensor noise


DEVICES: dict[str, ImagingDevice] = {
    "A": ImagingDevice((1.00, 0.97, 0.95), 0.05, 30.0, 0.15, 1.00, 0.0, 0.015),
    "B": ImagingDevice((1.08, 0.98, 0.80), 0.10, 120.0, 0.55, 0.90, 0.5, 0.010),
    "C": ImagingDevice((0.88, 0.97, 1.10), 0.20, 250.0, 0.10, 0.80, 1.0, 0.020),
    "D": ImagingDevice((1.02, 0.92, 0.98), 0.15, 340.0, 0.30, 1.20, 0.3, 0.045),
}

# Class-conditional (mean per class nv/bkl/mel, shared std) of each lesion property.
_PROPERTIES: dict[str, tuple[tuple[float, float, float], float]] = {
    "radius": ((0.45, 0.50, 0.55), 0.10),
    "elongation": ((1.10, 1.25, 1.25), 0.15),
    "asymmetry": ((0.05, 0.08, 0.12), 0.04),
    "irregularity": ((0.03, 0.05, 0.07), 0.025),
    "edge": ((0.03, 0.02, 0.05), 0.015),
    "darkness": ((0.65, 0.40, 0.60), 0.20),
    "mottling": ((0.06, 0.12, 0.09), 0.04),
    "dark_fraction": ((0.06, 0.10, 0.22), 0.12),
    "blue_fraction": ((-0.04, -0.02, 0.12), 0.10),  # clamped: most nv/bkl have none
}
_SKIN = (0.86, 0.66, 0.56)
_TAN, _BROWN = (0.72, 0.52, 0.36), (0.42, 0.25, 0.15)
_DARK, _BLUE_GREY = (0.16, 0.09, 0.07), (0.42, 0.46, 0.54)
_CHUNK = 512  # images rendered at once (bounds memory at large scale)
_ANGLES = 256  # angular resolution of the lesion border


def scaled_counts(scale: float) -> dict[str, dict[str, tuple[int, ...]]]:
    """The PRR table times ``scale``, rounded half up, at least 1 where the original is > 0."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return {
        client: {split: tuple(max(1, math.floor(n * scale + 0.5)) if n > 0 else 0 for n in counts)
                 for split, counts in splits.items()}
        for client, splits in PRR_CLASS_COUNTS.items()
    }


def _colour(rgb: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1)


def _smooth_noise(gen: torch.Generator, n: int, cells: int, size: int) -> torch.Tensor:
    """``[n, 1, size, size]`` smooth random field, roughly zero mean and unit std per image."""
    field = F.interpolate(torch.randn(n, 1, cells, cells, generator=gen), size=(size, size),
                          mode="bicubic", align_corners=False)
    std, mean = torch.std_mean(field, dim=(2, 3), keepdim=True)
    return (field - mean) / std.clamp_min(1e-6)


def _draw(gen: torch.Generator, labels: torch.Tensor, name: str, low: float, high: float) -> torch.Tensor:
    means, std = _PROPERTIES[name]
    value = torch.tensor(means)[labels] + std * torch.randn(len(labels), generator=gen)
    return value.clamp(low, high).view(-1, 1, 1, 1)


def _render_lesions(labels: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Device-free images ``float [B, 3, size, size]`` in ``[0, 1]`` for class ``labels [B]``."""
    n = len(labels)
    axis = torch.linspace(-1 + 1 / size, 1 - 1 / size, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    centre = 0.08 * torch.randn(n, 2, 1, 1, generator=gen)
    angle = 2 * math.pi * torch.rand(n, 1, 1, 1, generator=gen)
    stretch = _draw(gen, labels, "elongation", 1.0, 2.0).sqrt()
    dx, dy = x - centre[:, :1], y - centre[:, 1:]
    u = (dx * angle.cos() + dy * angle.sin()) / stretch
    v = (-dx * angle.sin() + dy * angle.cos()) * stretch
    dist, theta = torch.sqrt(u**2 + v**2), torch.atan2(v, u)

    # The border radius depends on the angle only: evaluate it on _ANGLES angles, then look up.
    phi = torch.linspace(-math.pi, math.pi, _ANGLES + 1)[:-1].view(1, 1, -1)
    border = torch.ones(n, 1, _ANGLES)
    for harmonics, name in (((2, 3), "asymmetry"), ((5, 6, 7, 8, 9, 10, 12), "irregularity")):
        amplitude = _draw(gen, labels, name, 0.0, 0.4).view(-1, 1, 1)
        weights = torch.rand(n, len(harmonics), 1, generator=gen)
        phases = 2 * math.pi * torch.rand(n, len(harmonics), 1, generator=gen)
        k = torch.tensor(harmonics, dtype=torch.float32).view(1, -1, 1)
        waves = (weights / weights.sum(1, keepdim=True) * torch.cos(k * phi + phases)).sum(1, keepdim=True)
        border = border + amplitude * waves
    index = ((theta + math.pi) / (2 * math.pi) * _ANGLES).round().long() % _ANGLES
    border = border.gather(2, index.view(n, 1, -1)).view(n, 1, size, size)
    radius = _draw(gen, labels, "radius", 0.2, 0.8) * border
    edge = _draw(gen, labels, "edge", 0.005, 0.15)
    mask = torch.sigmoid((radius - dist) / edge)

    tone = 1 + 0.06 * torch.randn(n, 1, 1, 1, generator=gen) + 0.02 * torch.randn(n, 3, 1, 1, generator=gen)
    skin = _colour(_SKIN) * tone * (1 + 0.03 * _smooth_noise(gen, n, 4, size)
                                    + 0.015 * _smooth_noise(gen, n, 16, size))

    darkness = _draw(gen, labels, "darkness", 0.0, 1.0)
    lesion = _colour(_TAN) + darkness * (_colour(_BROWN) - _colour(_TAN))
    lesion = lesion * (1 + _draw(gen, labels, "mottling", 0.0, 0.4) * _smooth_noise(gen, n, 12, size))
    for name, colour in (("dark_fraction", _DARK), ("blue_fraction", _BLUE_GREY)):
        fraction = _draw(gen, labels, name, 0.0, 0.7)  # 0 -> threshold +inf -> no region
        threshold = torch.special.ndtri(1 - fraction)
        region = 0.85 * torch.sigmoid((_smooth_noise(gen, n, 6, size) - threshold) / 0.2) * mask
        lesion = lesion + region * (_colour(colour) - lesion)
    return (skin + mask * (lesion - skin)).clamp(0, 1)


def _apply_device(images: torch.Tensor, device: ImagingDevice, gen: torch.Generator) -> torch.Tensor:
    """Apply ``device``'s colour, illumination, contrast, blur and noise to ``[B, 3, S, S]``."""
    size = images.shape[-1]
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    a = math.radians(device.gradient_angle)
    light = 1 + device.gradient * (x * math.cos(a) + y * math.sin(a)) / 2 - device.vignette * (x**2 + y**2) / 2
    out = images * _colour(device.gain) * light
    mean = out.mean((1, 2, 3), keepdim=True)
    out = mean + device.contrast * (out - mean)
    if device.blur_sigma > 0:
        offsets = torch.arange(-2, 3, dtype=torch.float32)
        k = torch.exp(-(offsets**2) / (2 * device.blur_sigma**2))
        k = (k / k.sum()).view(1, 1, 1, 5).repeat(3, 1, 1, 1)
        out = F.conv2d(F.pad(out, (2, 2, 0, 0), mode="reflect"), k, groups=3)
        out = F.conv2d(F.pad(out, (0, 0, 2, 2), mode="reflect"), k.transpose(2, 3), groups=3)
    out = out + device.noise_std * torch.randn(out.shape, generator=gen)
    return out.clamp(0, 1)


def _generate_split(counts: tuple[int, ...], device: ImagingDevice, image_size: int, seed_words: list[int]) -> ImageSplit:
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(seed_words).generate_state(1)[0]))
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    labels = labels[torch.randperm(len(labels), generator=gen)]
    chunks = []
    for start in range(0, len(labels), _CHUNK):
        part = _render_lesions(labels[start:start + _CHUNK], 2 * image_size, gen)
        part = F.interpolate(part, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        chunks.append((_apply_device(part, device, gen) * 255).round().to(torch.uint8))
    images = torch.cat(chunks) if chunks else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    return ImageSplit(images, labels)


def make_synthetic_dermoscopy(*, seed: int = 0, image_size: int = 32, scale: float = 0.25,
                              clients: Optional[Sequence[str]] = None) -> Federation:
    """Generate the ``derm_synthetic`` federation (see the module docstring).

    Parameters
    ----------
    seed:
        Same seed, same tensors bit for bit; another seed, other images (same counts, devices).
    image_size:
        Output images are ``uint8 [N, 3, image_size, image_size]``.
    scale:
        Multiplies the PRR class counts (0.25 gives ~2.6k images in total).
    clients:
        Generate only these clients (default: A-D); each one's images are those of the full
        federation (its generators are seeded by its own index).
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    selected = select_clients("derm_synthetic", tuple(PRR_CLASS_COUNTS), clients)
    counts = scaled_counts(scale)
    built = []
    for c, (name, splits) in enumerate(counts.items()):
        if name not in selected:
            continue
        parts = {s: _generate_split(splits[s], DEVICES[name], image_size, [seed, c, i]) for i, s in enumerate(SPLITS)}
        built.append(ClientData(name, **parts))
    logger.info("generated derm_synthetic (seed %d, %dpx, scale %g, clients %s)", seed, image_size, scale,
                ", ".join(selected))
    return Federation("derm_synthetic", CLASS_NAMES, tuple(built))


def describe(options: Mapping[str, Any]) -> FederationInfo:
    """The shape of ``derm_synthetic`` with ``options`` (clients A-D or ``clients``; nv, bkl, mel)."""
    return FederationInfo("derm_synthetic", "classification",
                          fixed_class_names("derm_synthetic", CLASS_NAMES, options["class_names"]),
                          select_clients("derm_synthetic", tuple(PRR_CLASS_COUNTS), options["clients"]))


@register_dataset("derm_synthetic", describe=describe)
def build(*, seed: int, image_size: int, scale: float = 0.25, clients: Optional[Sequence[str]] = None,
          class_names: Optional[Sequence[str]] = None) -> Federation:
    """Registry factory for :func:`make_synthetic_dermoscopy`: options ``scale``, ``clients`` and
    ``class_names`` (only nv, bkl, mel)."""
    fixed_class_names("derm_synthetic", CLASS_NAMES, class_names)
    return make_synthetic_dermoscopy(seed=seed, image_size=image_size, scale=scale, clients=clients)
