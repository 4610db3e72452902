"""Segmentation variants of PRR's losses, prototypes and metrics, in pure torch.

Chen et al., IEEE TMI 2022, prostate MRI experiment (PRR_METHOD.md sections 2, 3 and 5): the
supervised loss is ``0.5 * seesaw CE (with the prototype factor) + 0.5 * CE + soft Dice`` per
pixel, the DET distillation is the mean squared error between the two models' softmax maps, and
a class prototype is the masked mean of the bottleneck feature map.

Shapes: logits ``[N, C, H, W]``, masks ``[N, H, W]`` of class indices, features
``[N, D, h, w]`` (any ``h, w``; usually a downsampled grid).  Nothing here mutates its inputs.

Empty-mask convention (metrics): a slice whose ground truth and prediction are both empty for a
class has no Dice or IoU for that class (NaN, left out of every mean: there was nothing to
segment and nothing was predicted); a slice with an empty ground truth but some predicted pixels
scores 0, so false positives on empty slices are punished and predicting nothing never scores.
A split on which every slice is empty in both scores 1.  Recall is pooled over the pixels of a
split and is NaN when the split has no foreground pixel.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .cpa import cpa_loss


def _check_pair(logits: torch.Tensor, masks: torch.Tensor) -> None:
    if logits.dim() != 4 or masks.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"need logits [N, C, H, W] and masks [N, H, W], got {tuple(logits.shape)} and {tuple(masks.shape)}")


def pixels_as_samples(logits: torch.Tensor, masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``([N*H*W, C] logits, [N*H*W] int64 labels)``: every pixel one classification sample."""
    _check_pair(logits, masks)
    c = logits.shape[1]
    return logits.permute(0, 2, 3, 1).reshape(-1, c), masks.reshape(-1).long()


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """``1 - mean_c (2 sum p_c g_c + s) / (sum p_c + sum g_c + s)`` over the foreground classes.

    ``p`` is the softmax of ``logits``, ``g`` the one-hot ``masks``; sums run over the whole batch
    (every slice and pixel), classes ``1 .. C-1`` are averaged (class 0 is background).  With a
    single class (C = 1) that class is used.
    """
    _check_pair(logits, masks)
    c = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(masks.long(), c).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (total + smooth)
    return 1.0 - (dice[1:] if c > 1 else dice).mean()


def segmentation_cpa_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    seesaw: torch.Tensor,
    gamma: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """PRR's pixel-level CPA loss: ``0.5 * seesaw CE(gamma) + 0.5 * CE + soft Dice``.

    The seesaw term is :func:`~fedml_prr.core.cpa.cpa_loss` with every pixel a sample (its
    ``seesaw`` matrix built from the global *pixel* counts, ``gamma`` the per-class prototype
    factor or None in phase 1).  With an all-ones ``seesaw`` and no ``gamma`` the loss is
    ``CE + Dice``, the loss every baseline trains with on segmentation.
    """
    flat_logits, flat_labels = pixels_as_samples(logits, masks)
    seesaw_ce = cpa_loss(flat_logits, flat_labels, seesaw, gamma)
    ce = F.cross_entropy(flat_logits.float(), flat_labels)
    return 0.5 * seesaw_ce + 0.5 * ce + soft_dice_loss(logits, masks)


def ce_dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``CE + soft Dice``: the plain segmentation loss (baselines, PRR without CPA)."""
    flat_logits, flat_labels = pixels_as_samples(logits, masks)
    return F.cross_entropy(flat_logits.float(), flat_labels) + soft_dice_loss(logits, masks)


def softmax_mse_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                             temperature: float = 1.0) -> torch.Tensor:
    """Mean squared error between the softmax maps of student and (detached) teacher.

    ``mean((softmax(z_s / T) - softmax(z_t.detach() / T))^2)`` over every element; the teacher
    never receives a gradient.  PRR weights it by 10 (``prr_distill_weight``).
    """
    return F.mse_loss(torch.softmax(student_logits / temperature, dim=1),
                      torch.softmax(teacher_logits.detach() / temperature, dim=1))


def masked_feature_sums(features: torch.Tensor, masks: torch.Tensor, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class feature sums over the pixels of each class, for masked-mean prototypes.

    Every pixel takes the feature of the feature-map cell that covers it (the one-hot masks are
    area-pooled to the feature grid, so no class pixel is lost however small the structure).
    ``sums[c] / counts[c]`` is the mean bottleneck feature over the pixels of class ``c``.

    Parameters
    ----------
    features:
        ``[N, D, h, w]`` (detached by the caller or not; the sums are detached).
    masks:
        ``[N, H, W]`` class indices.

    Returns
    -------
    ``(sums [C, D] float64, counts [C] int64)`` where ``counts`` are pixel counts.
    """
    if features.dim() != 4 or masks.dim() != 3 or features.shape[0] != masks.shape[0]:
        raise ValueError(f"need features [N, D, h, w] and masks [N, H, W], got {tuple(features.shape)} and {tuple(masks.shape)}")
    h, w = features.shape[2:]
    height, width = masks.shape[1:]
    onehot = F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).to(torch.float64)  # [N, C, H, W]
    counts = onehot.sum((0, 2, 3)).round().long()
    pixels_per_cell = onehot.shape[2] * onehot.shape[3] / (h * w)
    weights = F.adaptive_avg_pool2d(onehot, (h, w)) * pixels_per_cell if (h, w) != (height, width) else onehot
    sums = torch.einsum("nchw,ndhw->cd", weights, features.detach().to(torch.float64))
    return sums, counts


# ----------------------------------------------------------------------------- metrics

def _nanmean(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over ``dim`` ignoring NaN; NaN where every entry is NaN."""
    valid = ~torch.isnan(x)
    total = torch.where(valid, x, torch.zeros_like(x)).sum(dim)
    count = valid.sum(dim)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def mean_slice_score(scores: torch.Tensor) -> float:
    """Mean of per-slice scores leaving out NaN (slices empty in both); 1.0 when all are NaN."""
    value = _nanmean(scores.reshape(1, -1), 1)[0]
    return 1.0 if torch.isnan(value) else float(value)


def slice_scores(pred: torch.Tensor, masks: torch.Tensor, num_classes: int) -> Dict[str, torch.Tensor]:
    """Per-slice foreground Dice and IoU plus pooled pixel counts of one batch.

    Parameters
    ----------
    pred, masks:
        ``[N, H, W]`` predicted and true class indices.

    Returns
    -------
    dict
        ``dice``, ``iou``: ``[N]`` float64, the mean over foreground classes ``1 .. C-1`` of the
        per-slice score, NaN where every class is empty in both (module docstring); ``tp``, ``fp``, ``fn``:
        ``[C]`` pooled pixel counts; ``correct``, ``pixels``: scalars for pixel accuracy.
    """
    if pred.shape != masks.shape or pred.dim() != 3:
        raise ValueError(f"need pred and masks [N, H, W] of one shape, got {tuple(pred.shape)} and {tuple(masks.shape)}")
    n = pred.shape[0]
    p = F.one_hot(pred.long().reshape(n, -1), num_classes).to(torch.float64)  # [N, P, C]
    g = F.one_hot(masks.long().reshape(n, -1), num_classes).to(torch.float64)
    tp, p_sum, g_sum = (p * g).sum(1), p.sum(1), g.sum(1)  # [N, C]
    fp, fn = p_sum - tp, g_sum - tp
    empty = (p_sum + g_sum) == 0
    nan = torch.full_like(tp, math.nan)
    dice = torch.where(empty, nan, 2 * tp / (p_sum + g_sum).clamp_min(1))
    iou = torch.where(empty, nan, tp / (tp + fp + fn).clamp_min(1))
    fg = slice(1, None) if num_classes > 1 else slice(None)
    return {"dice": _nanmean(dice[:, fg], 1), "iou": _nanmean(iou[:, fg], 1), "tp": tp.sum(0), "fp": fp.sum(0),
            "fn": fn.sum(0), "correct": (pred == masks).sum().to(torch.float64),
            "pixels": torch.tensor(float(pred.numel()), dtype=torch.float64)}


def combine_scores(parts: Dict[str, list]) -> Dict[str, float]:
    """Client metrics from the :func:`slice_scores` of every batch of a split.

    Returns ``dice`` and ``iou`` (mean over the slices that have one, 1 if none has), ``accuracy`` (pixel accuracy), ``recall``
    (pooled foreground recall, NaN without foreground pixels) and ``dice_global`` (Dice of the
    pooled pixel counts, ``2 TP / (2 TP + FP + FN)``, 1 when nothing is foreground anywhere),
    each in ``[0, 1]``.  Foreground classes are averaged as in :func:`slice_scores`.
    """
    if not parts["dice"]:
        return {name: float("nan") for name in ("dice", "iou", "accuracy", "recall", "dice_global")}
    tp, fp, fn = (torch.stack(parts[k]).sum(0) for k in ("tp", "fp", "fn"))
    fg = slice(1, None) if tp.numel() > 1 else slice(None)
    tp, fp, fn = tp[fg], fp[fg], fn[fg]
    positives = tp + fn
    recall = (tp / positives.clamp_min(1))[positives > 0]
    denominator = 2 * tp + fp + fn
    dice_global = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.ones_like(tp))
    return {
        "dice": mean_slice_score(torch.cat(parts["dice"])),
        "iou": mean_slice_score(torch.cat(parts["iou"])),
        "accuracy": float(torch.stack(parts["correct"]).sum() / torch.stack(parts["pixels"]).sum()),
        "recall": float(recall.mean()) if recall.numel() else math.nan,
        "dice_global": float(dice_global.mean()),
    }


def segmentation_metrics(pred: torch.Tensor, masks: torch.Tensor, num_classes: int) -> Dict[str, float]:
    """:func:`combine_scores` of a single batch (``pred``, ``masks`` ``[N, H, W]``)."""
    scores = slice_scores(pred, masks, num_classes)
    return combine_scores({k: [v] for k, v in scores.items()})
