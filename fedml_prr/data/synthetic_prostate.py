"""``prostate_synthetic``: a procedurally generated multi-site prostate-MRI-like federation.

The segmentation counterpart of ``derm_synthetic`` (DATASETS.md, embedded default): binary
prostate segmentation over five sites A-E, deterministic from a seed, generated in well under a
second at demo size, showing the two phenomena PRR targets:

* **Per-site feature shift.** Each site has its own scanner (:data:`SCANNERS`, fixed, independent
  of the seed): intensity gain and offset, a gamma (contrast) curve, a smooth bias field, blur and
  Rician-like noise.
* **Strong class imbalance.** The prostate covers about 2 % of the pixels (about 3 % of a slice
  through its centre, none at the ends of a case), as in the real data.

Anatomy of a case (a small 3-D volume, ``slices_per_case`` axial slices): a textured pelvis (body
ellipse), a bright bladder above the prostate, a dark rectum below it, and the prostate itself, an
ellipsoid with a textured, slightly brighter interior and a darker capsule.  Shapes, positions and
textures are drawn per case; the prostate mask is the ellipsoid's cross-section.  As in the real
loaders, each sample is one slice with slices ``i-1, i, i+1`` as its three channels, stored as
uint8, with a uint8 mask; splits are by case (every slice of a case lands in one split).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from fedml_prr.data.datasets import register_dataset
from fedml_prr.data.federation import SPLITS, ClientData, Federation, FederationInfo, ImageSplit
from fedml_prr.data.selection import fixed_class_names, select_clients

logger = logging.getLogger(__name__)

CLASS_NAMES = ("background", "prostate")


@dataclass(frozen=True)
class Scanner:
    """A site's MRI scanner; values act on intensities in ``[0, 1]``."""

    gain: float  # multiplies the intensity
    offset: float  # added after the gain
    gamma: float  # contrast curve v ** gamma (< 1 brightens the darks)
    bias: float  # strength of a smooth multiplicative bias field
    blur_sigma: float  # Gaussian blur, pixels at 64 px (scaled with the image size)
    noise_std: float  # magnitude noise


SCANNERS: dict[str, Scanner] = {
    "A": Scanner(1.00, 0.00, 1.00, 0.10, 0.0, 0.020),
    "B": Scanner(0.80, 0.10, 0.70, 0.25, 0.6, 0.030),
    "C": Scanner(1.15, -0.05, 1.40, 0.15, 0.0, 0.050),
    "D": Scanner(0.70, 0.05, 0.90, 0.35, 1.0, 0.015),
    "E": Scanner(1.05, 0.02, 1.20, 0.05, 0.4, 0.070),
}

#: cases per site in the train / valid / test splits (split by case)
DEFAULT_CASES = (5, 2, 2)


def _smooth_field(gen: torch.Generator, n: int, depth: int, cells: int, size: int) -> torch.Tensor:
    """``[n, depth, size, size]`` smooth 3-D random field, about zero mean and unit std per case."""
    coarse = torch.randn(n, 1, max(2, depth // 3), cells, cells, generator=gen)
    field = F.interpolate(coarse, size=(depth, size, size), mode="trilinear", align_corners=False)[:, 0]
    std, mean = torch.std_mean(field, dim=(1, 2, 3), keepdim=True)
    return (field - mean) / std.clamp_min(1e-6)


def _ellipse(x, y, cx, cy, rx, ry, edge):
    """Soft indicator of an axis-aligned ellipse (``edge``: softness in normalised units)."""
    dist = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return torch.sigmoid((1 - dist) / edge)


def _render_cases(n: int, depth: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Scanner-free volumes ``float [n, depth, size, size]`` in ``[0, 1]`` and masks ``bool``, same shape."""
    axis = torch.linspace(-1 + 1 / size, 1 - 1 / size, size)
    y, x = (t.view(1, 1, size, size) for t in torch.meshgrid(axis, axis, indexing="ij"))
    z = torch.linspace(-1, 1, depth).view(1, depth, 1, 1)

    def draw(mean, std, shape=(n, 1, 1, 1)):
        return mean + std * torch.randn(shape, generator=gen)

    body = _ellipse(x, y, 0.0, 0.0, draw(0.88, 0.04), draw(0.72, 0.04), 0.03)
    tissue = 0.42 + 0.07 * _smooth_field(gen, n, depth, 8, size) + 0.03 * _smooth_field(gen, n, depth, 24, size)
    image = body * tissue

    # the prostate: an ellipsoid whose cross-section shrinks towards the ends of the case
    cx, cy = draw(0.0, 0.06), draw(0.08, 0.05)
    rx, ry = draw(0.23, 0.03).clamp(0.12, 0.34), draw(0.19, 0.025).clamp(0.1, 0.3)
    rz = draw(0.85, 0.12).clamp(0.5, 1.2)
    scale = torch.sqrt((1 - (z / rz) ** 2).clamp_min(0))  # [n, depth, 1, 1]
    present = scale > 0.15
    srx, sry = (rx * scale).clamp_min(1e-3), (ry * scale).clamp_min(1e-3)
    dist = torch.sqrt(((x - cx) / srx) ** 2 + ((y - cy) / sry) ** 2)
    mask = (dist < 1) & present
    inside = torch.sigmoid((1 - dist) / 0.08) * present
    capsule = torch.exp(-((dist - 1) / 0.12) ** 2) * present
    gland = draw(0.55, 0.05) + 0.09 * _smooth_field(gen, n, depth, 16, size)
    image = image + inside * (gland - image) - 0.12 * capsule

    # neighbours: bright bladder above, dark rectum below (they shift the intensity statistics)
    bladder = _ellipse(x, y, cx + draw(0, 0.05), cy - ry - draw(0.22, 0.04), draw(0.24, 0.04), draw(0.14, 0.03), 0.06)
    image = image + bladder * (draw(0.85, 0.05) - image) * (z.abs() < draw(0.7, 0.1))
    rectum = _ellipse(x, y, cx + draw(0, 0.03), cy + ry + draw(0.16, 0.03), draw(0.10, 0.02), draw(0.09, 0.02), 0.05)
    image = image + rectum * (draw(0.12, 0.04) - image)
    return image.clamp(0, 1), mask


def _apply_scanner(volumes: torch.Tensor, scanner: Scanner, gen: torch.Generator) -> torch.Tensor:
    n, depth, size, _ = volumes.shape
    bias = 1 + scanner.bias * _smooth_field(gen, n, depth, 3, size) / 2
    out = (volumes * bias).clamp(0, 1).pow(scanner.gamma) * scanner.gain + scanner.offset
    sigma = scanner.blur_sigma * size / 64
    if sigma > 0:
        radius = max(1, math.ceil(2 * sigma))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-(offsets**2) / (2 * sigma**2))
        k = (k / k.sum()).view(1, 1, 1, -1)
        flat = out.reshape(n * depth, 1, size, size)
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), k)
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), k.transpose(2, 3))
        out = flat.reshape(n, depth, size, size)
    real = out + scanner.noise_std * torch.randn(out.shape, generator=gen)
    imaginary = scanner.noise_std * torch.randn(out.shape, generator=gen)
    return torch.sqrt(real**2 + imaginary**2).clamp(0, 1)  # magnitude image: Rician noise


def slices_with_neighbours(volumes: torch.Tensor) -> torch.Tensor:
    """``[n, depth, H, W]`` -> ``[n * depth, 3, H, W]``: slice i with slices i-1 and i+1 as channels
    (the first and last slice repeat themselves as their missing neighbour)."""
    depth = volumes.shape[1]
    index = torch.arange(depth)
    stacked = torch.stack([volumes[:, (index - 1).clamp_min(0)], volumes, volumes[:, (index + 1).clamp_max(depth - 1)]],
                          dim=2)
    return stacked.reshape(-1, 3, *volumes.shape[2:])


def _generate_site(cases: tuple[int, int, int], depth: int, scanner: Scanner, image_size: int,
                   seed_words: list[int]) -> dict[str, ImageSplit]:
    """All cases of one site rendered at once, then split by case (train, valid, test in order)."""
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(seed_words).generate_state(1)[0]))
    volumes, masks = _render_cases(sum(cases), depth, image_size, gen)
    volumes = _apply_scanner(volumes, scanner, gen)
    images = (slices_with_neighbours(volumes) * 255).round().to(torch.uint8)
    labels = masks.reshape(-1, image_size, image_size).to(torch.uint8)
    bounds = np.cumsum((0,) + tuple(cases)) * depth
    return {split: ImageSplit(images[bounds[i]:bounds[i + 1]], labels[bounds[i]:bounds[i + 1]])
            for i, split in enumerate(SPLITS)}


def site_names(sites: int) -> Tuple[str, ...]:
    """The first ``sites`` site names (A, B, ...); ``ValueError`` outside 1 to 5."""
    if not 1 <= sites <= len(SCANNERS):
        raise ValueError(f"sites must be in [1, {len(SCANNERS)}], got {sites}")
    return tuple(SCANNERS)[:sites]


def make_synthetic_prostate(*, seed: int = 0, image_size: int = 64, cases: tuple[int, int, int] = DEFAULT_CASES,
                            slices_per_case: int = 10, sites: int = 5,
                            clients: Optional[Sequence[str]] = None) -> Federation:
    """Generate the ``prostate_synthetic`` federation (see the module docstring).

    Parameters
    ----------
    seed:
        Same seed, same tensors bit for bit.
    image_size:
        Slices are ``uint8 [N, 3, image_size, image_size]``, masks ``uint8 [N, image_size, image_size]``.
    cases:
        Cases per site in train, valid and test.
    slices_per_case:
        Axial slices of each case (all kept, so some have no prostate, as in real volumes).
    sites:
        Number of sites, 1 to 5 (A, B, ...).
    clients:
        Generate only these of the sites (default: all); each one's slices are those of the full
        federation (its generator is seeded by its own index).
    """
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    if len(cases) != 3 or min(cases) < 0 or cases[0] < 1:
        raise ValueError(f"cases must be three non-negative counts (train, valid, test) with train >= 1, got {cases}")
    if slices_per_case < 3:
        raise ValueError(f"slices_per_case must be at least 3, got {slices_per_case}")
    names = site_names(sites)
    selected = select_clients("prostate_synthetic", names, clients)
    built = []
    for s, name in enumerate(names):
        if name in selected:
            parts = _generate_site(tuple(cases), slices_per_case, SCANNERS[name], image_size, [seed, s])
            built.append(ClientData(name, **parts))
    logger.info("generated prostate_synthetic (seed %d, %dpx, sites %s)", seed, image_size, ", ".join(selected))
    return Federation("prostate_synthetic", CLASS_NAMES, tuple(built))


def describe(options: Mapping[str, Any]) -> FederationInfo:
    """The shape of ``prostate_synthetic`` with ``options`` (the first ``sites`` sites, or ``clients`` of them)."""
    return FederationInfo("prostate_synthetic", "segmentation",
                          fixed_class_names("prostate_synthetic", CLASS_NAMES, options["class_names"]),
                          select_clients("prostate_synthetic", site_names(options["sites"]), options["clients"]))


@register_dataset("prostate_synthetic", task="segmentation", describe=describe)
def build(*, seed: int, image_size: int, cases: tuple[int, int, int] = DEFAULT_CASES, slices_per_case: int = 10,
          sites: int = 5, clients: Optional[Sequence[str]] = None,
          class_names: Optional[Sequence[str]] = None) -> Federation:
    """Registry factory for :func:`make_synthetic_prostate` (``class_names``: only background, prostate)."""
    fixed_class_names("prostate_synthetic", CLASS_NAMES, class_names)
    return make_synthetic_prostate(seed=seed, image_size=image_size, cases=tuple(cases),
                                   slices_per_case=slices_per_case, sites=sites, clients=clients)

