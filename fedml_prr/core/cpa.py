"""Conjoint Prototype-Aligned (CPA) loss against global class imbalance.

Chen et al., IEEE TMI 2022, section III-D.  A Seesaw-style mitigation matrix built from the
*global* class counts damps the negative gradients that frequent classes push onto rare ones;
once prototypes are meaningful, each class's loss is scaled by how far the client's class
prototype has drifted from the global one.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def seesaw_matrix(class_counts: torch.Tensor, beta: float = 0.8) -> torch.Tensor:
    """Mitigation matrix ``S[i, j] = (N_j / N_i) ** beta`` if ``N_i > N_j`` else 1.

    Parameters
    ----------
    class_counts:
        ``[C]`` global training count per class (sum over clients).
    beta:
        Mitigation strength; 0 gives the all-ones matrix (plain softmax cross-entropy).

    Returns
    -------
    torch.Tensor
        ``[C, C]`` float32; row ``i`` is used for samples of label ``i``.  A class absent
        everywhere (``N_j = 0``) gets weight 0 as a negative of present classes.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if (counts < 0).any():
        raise ValueError(f"class counts must be non-negative, got {counts.tolist()}")
    n_i, n_j = counts[:, None], counts[None, :]
    ratio = torch.where(n_i > 0, n_j / n_i.clamp_min(1e-12), torch.ones_like(n_j * n_i))
    return torch.where(n_i > n_j, ratio.pow(beta), torch.ones_like(ratio)).float()


def prototype_factor(
    local_protos: torch.Tensor,
    global_protos: torch.Tensor,
    tau: float = 3.0,
    present: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-class loss factor ``gamma_c = (1 + tau) / (cos(p_c, g_c) + tau)``, in ``[1, (1+tau)/(tau-1)]``.

    With ``tau = 3``: non-negative (post-ReLU) prototypes and the mean global prototype give a
    cosine in ``[0, 1]`` and ``gamma`` in ``[1, 4/3]``; the reference's Gaussian global prototype
    (mean + noise of scale ``max(std, 1)``) can have negative components, so the cosine spans
    ``[-1, 1]`` and ``gamma`` ``[1, 2]``.  A class whose local prototype points away from the global
    one is up-weighted: ``gamma`` multiplies that class's loss, and so its step size.

    Parameters
    ----------
    local_protos, global_protos:
        ``[C, D]`` class prototypes.
    present:
        Optional ``[C]`` bool mask of classes the client has; absent classes get ``gamma = 1``
        (their prototype is meaningless; the reference code crashes there).
    """
    if local_protos.shape != global_protos.shape:
        raise ValueError(f"prototype shapes differ: {tuple(local_protos.shape)} vs {tuple(global_protos.shape)}")
    cos = F.cosine_similarity(local_protos.float(), global_protos.float().to(local_protos.device), dim=1, eps=1e-8)
    gamma = (1.0 + tau) / (cos + tau)
    if present is not None:
        gamma = torch.where(present.to(gamma.device), gamma, torch.ones_like(gamma))
    return gamma


def cpa_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    seesaw: torch.Tensor,
    gamma: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``mean_n[-gamma_{y_n} log p_{y_n}]`` with the Seesaw re-weighted softmax.

    ``p_y = exp(z_y) / (exp(z_y) + sum_{j != y} S[y, j] exp(z_j))``, computed in log space
    (stable for any logit scale).  ``gamma=None`` is phase 1 of the spec (all ones).

    Parameters
    ----------
    logits:
        ``[N, C]``.
    targets:
        ``[N]`` int64 labels.
    seesaw:
        ``[C, C]`` from :func:`seesaw_matrix` (diagonal ignored: the target term has weight 1).
    gamma:
        Optional ``[C]`` per-class factor from :func:`prototype_factor`.
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"need logits [N, C] and targets [N], got {tuple(logits.shape)} and {tuple(targets.shape)}")
    weights = seesaw.to(device=logits.device, dtype=torch.float32)[targets]
    weights = weights.scatter(1, targets[:, None], 1.0)
    log_norm = torch.logsumexp(logits.float() + torch.log(weights), dim=1)
    nll = log_norm - logits.float().gather(1, targets[:, None]).squeeze(1)
    if gamma is not None:
        nll = gamma.to(nll.device)[targets] * nll
    return nll.mean()
