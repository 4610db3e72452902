"""Classification metrics in pure torch: confusion matrix, macro-F1, balanced accuracy, AUC.

Conventions follow scikit-learn so reported numbers are comparable with the PRR reference
code (which used sklearn): macro-F1 averages over classes present in ``y_true`` or ``y_pred``;
balanced accuracy averages recall over classes present in ``y_true``; the one-vs-rest AUC
averages over classes with both positives and negatives. Inputs are never mutated; all work
is done on CPU copies.
"""

from __future__ import annotations

import math

import torch


def _labels(y: torch.Tensor, num_classes: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(y).detach().to("cpu")
    if y.dim() != 1 or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes})")
    return y


def _pair(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int):
    true, pred = _labels(y_true, num_classes, "y_true"), _labels(y_pred, num_classes, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true {tuple(true.shape)} and y_pred {tuple(pred.shape)} differ")
    return true, pred


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``[C, C]`` (int64, CPU); entry ``[i, j]`` = samples of true class i predicted j.

    Parameters
    ----------
    y_true, y_pred:
        Integer labels ``[N]`` in ``[0, num_classes)``.
    """
    true, pred = _pair(y_true, y_pred, num_classes)
    flat = torch.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def macro_f1(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> float:
    """Mean F1 over classes present in ``y_true`` or ``y_pred``; 0.0 for empty inputs.

    Parameters
    ----------
    y_true, y_pred:
        Integer labels ``[N]``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes).double()
    support = cm.sum(dim=1) + cm.sum(dim=0)  # 2*TP + FP + FN per class
    present = support > 0
    if not present.any():
        return 0.0
    f1 = 2 * cm.diagonal()[present] / support[present]
    return float(f1.mean())


def balanced_accuracy(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> float:
    """Mean recall over classes present in ``y_true``; 0.0 for empty inputs.

    Parameters
    ----------
    y_true, y_pred:
        Integer labels ``[N]``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes).double()
    count = cm.sum(dim=1)
    present = count > 0
    if not present.any():
        return 0.0
    return float((cm.diagonal()[present] / count[present]).mean())


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``values [N]``, ties sharing the mean of their ranks (float64)."""
    sorted_values, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(
        sorted_values, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    group_rank = ends - (counts.double() - 1) / 2  # mean of ranks end-count+1 .. end
    ranks = group_rank.new_empty(values.shape)
    ranks[order] = group_rank[inverse]
    return ranks


def macro_auc_ovr(y_true: torch.Tensor, scores: torch.Tensor, num_classes: int) -> float:
    """One-vs-rest ROC AUC averaged over classes with both positives and negatives.

    Each class's AUC is the Mann-Whitney statistic on ``scores[:, c]`` with average ranks for
    ties (a constant score gives 0.5).

    Parameters
    ----------
    y_true:
        Integer labels ``[N]``.
    scores:
        Per-class scores ``[N, num_classes]`` (probabilities or logits; only order matters).

    Returns
    -------
    float
        The macro AUC in ``[0, 1]``; NaN when no class has both positives and negatives.
    """
    true = _labels(y_true, num_classes, "y_true")
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    if scores.shape != (true.numel(), num_classes):
        expected = f"[{true.numel()}, {num_classes}]"
        raise ValueError(f"scores must be {expected}, got {tuple(scores.shape)}")
    aucs = []
    for c in range(num_classes):
        positive = true == c
        n_pos = int(positive.sum())
        n_neg = true.numel() - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        rank_sum = float(_average_ranks(scores[:, c])[positive].sum())
        aucs.append((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return sum(aucs) / len(aucs) if aucs else math.nan


def classification_metrics(
    y_true: torch.Tensor, probabilities: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and macro OvR AUC of one evaluation.

    Parameters
    ----------
    y_true:
        Integer labels ``[N]``.
    probabilities:
        Class probabilities (or any monotone scores) ``[N, num_classes]``; the prediction is
        their argmax.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auc`` as python floats in
        ``[0, 1]`` (fractions, not percent). ``auc`` is NaN when undefined (a single class in
        ``y_true``); the others are 0.0 for empty inputs.
    """
    true = _labels(y_true, num_classes, "y_true")
    scores = torch.as_tensor(probabilities).detach().to("cpu")
    if scores.shape != (true.numel(), num_classes):
        raise ValueError(
            f"probabilities must be [{true.numel()}, {num_classes}], got {tuple(scores.shape)}"
        )
    pred = scores.argmax(dim=1) if true.numel() else true.clone()
    accuracy = float((pred == true).double().mean()) if true.numel() else 0.0
    return {
        "accuracy": accuracy,
        "balanced_accuracy": balanced_accuracy(true, pred, num_classes),
        "macro_f1": macro_f1(true, pred, num_classes),
        "auc": macro_auc_ovr(true, scores, num_classes),
    }
