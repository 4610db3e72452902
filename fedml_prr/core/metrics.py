"""Classification metrics: scikit-learn's, behind a thin wrapper (tensors in, python floats out).

The numbers are scikit-learn's (``sklearn.metrics``), the library the PRR reference code used,
with these conventions: macro-F1 averages over the classes present in ``y_true`` or ``y_pred``;
balanced accuracy averages recall over the classes present in ``y_true`` (without sklearn's
warnings about predicted classes absent from ``y_true`` or a single class in both: per-client
test sets often lack classes); the one-vs-rest AUC averages over the classes with both positives and negatives, and
is NaN when there is none; an empty input scores 0.0 (AUC: NaN).  Inputs (torch tensors on any
device, or arrays) are never mutated; the work is done on CPU copies.

The wrapper's own cost is small: PRR's stage check calls :func:`macro_f1` twice per client and
local epoch, about a millisecond each for 500 samples.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn import metrics as skm


def _labels(y: torch.Tensor, num_classes: int, name: str) -> np.ndarray:
    y = torch.as_tensor(y).detach().to("cpu")
    if y.dim() != 1 or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor, got {y.dtype} {tuple(y.shape)}")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes})")
    return y.numpy()


def _pair(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    true, pred = _labels(y_true, num_classes, "y_true"), _labels(y_pred, num_classes, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true {tuple(true.shape)} and y_pred {tuple(pred.shape)} differ")
    return true, pred


def _scores(scores: torch.Tensor, n: int, num_classes: int, name: str) -> np.ndarray:
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    if scores.shape != (n, num_classes):
        raise ValueError(f"{name} must be [{n}, {num_classes}], got {tuple(scores.shape)}")
    return scores.numpy()


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``[C, C]`` (int64, CPU); entry ``[i, j]`` = samples of true class i predicted j.

    Parameters
    ----------
    y_true, y_pred:
        Integer labels ``[N]`` in ``[0, num_classes)``.
    """
    true, pred = _pair(y_true, y_pred, num_classes)
    if not true.size:
        return torch.zeros(num_classes, num_classes, dtype=torch.int64)
    counts = skm.confusion_matrix(true, pred, labels=np.arange(num_classes))
    return torch.from_numpy(counts.astype(np.int64))


def _macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    if not true.size:
        return 0.0
    return float(skm.f1_score(true, pred, average="macro", zero_division=0.0))


#: sklearn's warnings about absent classes, expected here (per-client splits often lack classes).
_ABSENT_CLASS_WARNINGS = ("y_pred contains classes not in y_true", "A single label was found")


def _balanced_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    if not true.size:
        return 0.0
    with warnings.catch_warnings():  # classes predicted but absent from y_true are left out, silently
        for message in _ABSENT_CLASS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        return float(skm.balanced_accuracy_score(true, pred))


def _macro_auc_ovr(true: np.ndarray, scores: np.ndarray) -> float:
    positives = np.bincount(true, minlength=scores.shape[1])
    classes = np.flatnonzero((positives > 0) & (positives < len(true)))
    if not len(classes):
        return math.nan
    if len(classes) == 1:
        return float(skm.roc_auc_score(true == classes[0], scores[:, classes[0]]))
    one_vs_rest = (true[:, None] == classes[None, :]).astype(np.int64)
    return float(skm.roc_auc_score(one_vs_rest, scores[:, classes], average="macro"))


def macro_f1(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> float:
    """Mean F1 over classes present in ``y_true`` or ``y_pred``; 0.0 for empty inputs.

    Parameters
    ----------
    y_true, y_pred:
        Integer labels ``[N]``.
    """
    return _macro_f1(*_pair(y_true, y_pred, num_classes))


def balanced_accuracy(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> float:
    """Mean recall over classes present in ``y_true``; 0.0 for empty inputs; never warns.

    Parameters
    ----------
    y_true, y_pred:
        Integer labels ``[N]``.
    """
    return _balanced_accuracy(*_pair(y_true, y_pred, num_classes))


def macro_auc_ovr(y_true: torch.Tensor, scores: torch.Tensor, num_classes: int) -> float:
    """One-vs-rest ROC AUC averaged over classes with both positives and negatives.

    Ties count half (a constant score gives 0.5), as in ``sklearn.metrics.roc_auc_score``.

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
    return _macro_auc_ovr(true, _scores(scores, len(true), num_classes, "scores"))


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
    scores = _scores(probabilities, len(true), num_classes, "probabilities")
    pred = scores.argmax(axis=1) if true.size else true.copy()
    return {
        "accuracy": float(skm.accuracy_score(true, pred)) if true.size else 0.0,
        "balanced_accuracy": _balanced_accuracy(true, pred),
        "macro_f1": _macro_f1(true, pred),
        "auc": _macro_auc_ovr(true, scores),
    }
