"""Class prototypes: per-class mean features on a client, and the server's global prototype.

Spec section 3.  A client that lacks a class keeps the reset value (all ones) for that class's
local prototype, reports a zero count for it, and its ``gamma`` for that class is 1 (the class
never appears in its loss anyway).  The server builds each class's global prototype only from
the clients that saw that class; a class no client saw gets the reset value.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


class PrototypeAccumulator:
    """Running per-class feature sums over one epoch.

    Parameters
    ----------
    num_classes, dim:
        ``C`` classes of ``D``-dimensional features.
    """

    def __init__(self, num_classes: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(num_classes, dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_classes, dtype=torch.int64, device=device)

    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate ``features`` [B, D] (detached) of samples with ``labels`` [B]."""
        self.sums.index_add_(0, labels, features.detach().to(self.sums.dtype))
        self.counts.index_add_(0, labels, torch.ones_like(labels))

    def add_sums(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Accumulate precomputed per-class ``sums`` [C, D] over ``counts`` [C] samples (or pixels:
        the masked means of segmentation, :func:`~fedml_prr.core.segmentation.masked_feature_sums`)."""
        self.sums += sums.detach().to(self.sums.dtype)
        self.counts += counts.to(self.counts.dtype)

    def prototypes(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``([C, D] float32 means, [C] counts)``; classes never seen are all ones."""
        means = self.sums / self.counts.clamp_min(1)[:, None].to(self.sums.dtype)
        means = torch.where(self.counts[:, None] > 0, means, torch.ones_like(means))
        return means.float(), self.counts.clone()


def reset_prototypes(num_classes: int, dim: int) -> torch.Tensor:
    """The reference's round-start value of the local prototypes: all ones ``[C, D]``."""
    return torch.ones(num_classes, dim)


def global_prototype(
    local_protos: torch.Tensor,
    counts: torch.Tensor,
    *,
    method: str = "gaussian",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Global prototype ``[C, D]`` from K clients' prototypes ``[K, C, D]`` and counts ``[K, C]``.

    ``method="mean"``: mean over the clients that have class c.  ``method="gaussian"`` (the
    reference default): that mean plus ``randn * max(std, 1)`` per dimension, the std taken over
    the same clients (population std, so one client gives std 0 and noise scale 1); redrawn on
    every call from ``generator``.
    """
    if local_protos.dim() != 3 or counts.shape != local_protos.shape[:2]:
        raise ValueError(f"need protos [K, C, D] and counts [K, C], got {tuple(local_protos.shape)} and {tuple(counts.shape)}")
    if method not in ("mean", "gaussian"):
        raise ValueError(f"method must be 'mean' or 'gaussian', got {method!r}")
    protos = local_protos.double()
    have = (counts > 0).to(protos.dtype)[:, :, None]  # [K, C, 1]
    n = have.sum(0)  # [C, 1]
    mean = (protos * have).sum(0) / n.clamp_min(1)
    result = mean
    if method == "gaussian":
        var = ((protos - mean) ** 2 * have).sum(0) / n.clamp_min(1)
        scale = var.sqrt().clamp_min(1.0)
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float64)
        result = mean + noise.to(mean.device) * scale
    result = torch.where(n > 0, result, torch.ones_like(result))
    return result.float()
