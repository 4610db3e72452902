"""What differs between classification and segmentation, in one small object per task.

Every algorithm trains through a :class:`Task` instead of calling classification code directly:
the supervised loss (cross-entropy or PRR's CPA; per pixel with a Dice term for segmentation),
DET's distillation (KL of the class posteriors; MSE of the softmax maps), prototype extraction
(per-sample features; masked means of the bottleneck feature map), the evaluation metrics and
the score that drives model selection, retrogress and DET's stage choice (macro-F1; Dice).

The task is chosen from the data: a split whose labels are masks ``[N, H, W]`` is segmentation
(:func:`task_for`).  The classification task calls exactly the functions the algorithms called
before tasks existed, so classification results are unchanged bit for bit.
"""

from __future__ import annotations

import abc
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.cpa import cpa_loss
from ..core.det import kl_distillation
from ..core.metrics import macro_f1
from ..core.prototypes import PrototypeAccumulator
from ..core.segmentation import (ce_dice_loss, combine_scores, masked_feature_sums, mean_slice_score,
                                 segmentation_cpa_loss, slice_scores, softmax_mse_distillation)
from ..data.augment import to_model_input
from ..data.federation import ImageSplit
from .loops import evaluate, predict


class ScoreTracker(abc.ABC):
    """Accumulates one model's predictions over a training epoch; :meth:`score` is its task score
    (DET's cheap ``previous_epoch`` stage estimate)."""

    @abc.abstractmethod
    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Record a batch (``logits`` are detached here)."""

    @abc.abstractmethod
    def score(self) -> float:
        """The task score of everything recorded."""


class Task(abc.ABC):
    """The task-specific pieces of training and evaluation (see the module docstring).

    Attributes
    ----------
    name:
        ``"classification"`` or ``"segmentation"``.
    selection_metric:
        Key of :meth:`evaluate`'s result used for model selection, retrogress and DET.
    selection_label:
        How tables and figures name that metric (``macro-F1``, ``Dice``).
    score_name:
        Short name of that score in per-epoch records (``f1``, ``dice``).
    metric_names:
        Every metric :meth:`evaluate` reports (besides ``n``), in table order.
    table_columns:
        ``(column label, metric)`` of a run's per-client table.
    final_columns:
        The same for the one-line summary of a run's last round.
    weighted_row:
        Whether a run's table adds a row of sample-weighted client means.
    compared_metrics:
        The metrics a comparison over algorithms and seeds tabulates (before the retrogress).
    """

    name: str
    selection_metric: str
    selection_label: str
    score_name: str
    metric_names: Tuple[str, ...]
    table_columns: Tuple[Tuple[str, str], ...]
    final_columns: Tuple[Tuple[str, str], ...]
    weighted_row: bool
    compared_metrics: Tuple[str, ...]

    @abc.abstractmethod
    def loss(self, logits: torch.Tensor, targets: torch.Tensor, *, seesaw: Optional[torch.Tensor] = None,
             gamma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Supervised loss: plain when ``seesaw`` is None (baselines), else PRR's CPA loss."""

    @abc.abstractmethod
    def distillation(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
        """DET distillation of the student towards the detached teacher (unweighted)."""

    @abc.abstractmethod
    def add_prototypes(self, accumulator: PrototypeAccumulator, features: torch.Tensor,
                       targets: torch.Tensor) -> None:
        """Accumulate a batch's per-class features for CPA's local prototypes."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, split: ImageSplit, num_classes: int, batch_size: int) -> Dict[str, float]:
        """Metrics of ``model`` on ``split`` (eval mode, no autograd), with the sample count ``n``."""

    @abc.abstractmethod
    def score(self, model: nn.Module, split: ImageSplit, num_classes: int, batch_size: int) -> float:
        """The selection metric of ``model`` on ``split`` (DET's faithful stage check)."""

    @abc.abstractmethod
    def score_tracker(self, num_classes: int) -> ScoreTracker:
        """A fresh :class:`ScoreTracker`."""


class _LabelTracker(ScoreTracker):
    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.predictions: List[torch.Tensor] = []
        self.labels: List[torch.Tensor] = []

    def add(self, logits, targets):
        self.predictions.append(logits.detach().argmax(1))
        self.labels.append(targets)

    def score(self):
        return macro_f1(torch.cat(self.labels), torch.cat(self.predictions), self.num_classes)


class ClassificationTask(Task):
    """Image-level labels ``[N]``; CE / CPA, KL distillation, macro-F1."""

    name = "classification"
    selection_metric = "macro_f1"
    selection_label = "macro-F1"
    score_name = "f1"
    metric_names = ("accuracy", "balanced_accuracy", "macro_f1", "auc")
    table_columns = (("acc", "accuracy"), ("bacc", "balanced_accuracy"), ("F1", "macro_f1"), ("AUC", "auc"))
    final_columns = (("acc", "accuracy"), ("F1", "macro_f1"), ("AUC", "auc"))
    weighted_row = True
    compared_metrics = ("accuracy", "balanced_accuracy", "macro_f1", "auc")

    def loss(self, logits, targets, *, seesaw=None, gamma=None):
        return F.cross_entropy(logits, targets) if seesaw is None else cpa_loss(logits, targets, seesaw, gamma)

    def distillation(self, student_logits, teacher_logits, temperature=1.0):
        return kl_distillation(student_logits, teacher_logits, temperature)

    def add_prototypes(self, accumulator, features, targets):
        accumulator.add(features, targets)

    def evaluate(self, model, split, num_classes, batch_size):
        return evaluate(model, split, num_classes, batch_size)

    def score(self, model, split, num_classes, batch_size):
        probs, labels = predict(model, split, batch_size)
        return macro_f1(labels, probs.argmax(1), num_classes)

    def score_tracker(self, num_classes):
        return _LabelTracker(num_classes)


class _DiceTracker(ScoreTracker):
    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.dice: List[torch.Tensor] = []

    def add(self, logits, targets):
        self.dice.append(slice_scores(logits.detach().argmax(1), targets, self.num_classes)["dice"])

    def score(self):
        return mean_slice_score(torch.cat(self.dice)) if self.dice else float("nan")


class SegmentationTask(Task):
    """Per-pixel masks ``[N, H, W]``; CE + Dice / pixel CPA, softmax-MSE distillation, Dice.

    Models return ``(logits [N, C, H, W], bottleneck feature map [N, D, h, w])``.  Metrics and the
    empty-mask convention: :mod:`fedml_prr.core.segmentation`.
    """

    name = "segmentation"
    selection_metric = "dice"
    selection_label = "Dice"
    score_name = "dice"
    metric_names = ("dice", "iou", "accuracy", "recall", "dice_global")
    table_columns = (("Dice", "dice"), ("IoU", "iou"), ("acc", "accuracy"), ("recall", "recall"))
    final_columns = (("Dice", "dice"), ("IoU", "iou"))
    weighted_row = False
    compared_metrics = ("dice", "iou", "accuracy", "recall")

    def loss(self, logits, targets, *, seesaw=None, gamma=None):
        return ce_dice_loss(logits, targets) if seesaw is None else segmentation_cpa_loss(logits, targets, seesaw, gamma)

    def distillation(self, student_logits, teacher_logits, temperature=1.0):
        return softmax_mse_distillation(student_logits, teacher_logits, temperature)

    def add_prototypes(self, accumulator, features, targets):
        sums, counts = masked_feature_sums(features, targets, accumulator.sums.shape[0])
        accumulator.add_sums(sums.to(accumulator.sums.device), counts.to(accumulator.counts.device))

    @torch.no_grad()
    def evaluate(self, model, split, num_classes, batch_size):
        if len(split) == 0:
            return {**{m: float("nan") for m in self.metric_names}, "n": 0}
        was_training = model.training
        model.eval()
        parts: Dict[str, list] = {}
        for start in range(0, len(split), batch_size):
            logits, _ = model(to_model_input(split.images[start:start + batch_size]))
            scores = slice_scores(logits.argmax(1), split.labels[start:start + batch_size], num_classes)
            for key, value in scores.items():
                parts.setdefault(key, []).append(value.cpu())
        model.train(was_training)
        metrics = combine_scores(parts)
        metrics["n"] = len(split)
        return metrics

    def score(self, model, split, num_classes, batch_size):
        return self.evaluate(model, split, num_classes, batch_size)["dice"]

    def score_tracker(self, num_classes):
        return _DiceTracker(num_classes)


CLASSIFICATION = ClassificationTask()
SEGMENTATION = SegmentationTask()
TASKS: Dict[str, Task] = {t.name: t for t in (CLASSIFICATION, SEGMENTATION)}

#: how tables and figures name each metric
METRIC_LABELS: Dict[str, str] = {
    "accuracy": "Accuracy", "balanced_accuracy": "Balanced acc.", "macro_f1": "Macro-F1", "auc": "AUC",
    "dice": "Dice", "iou": "IoU", "recall": "Recall", "dice_global": "Dice (pooled)", "retrogress": "Retrogress",
}


def task_named(name: str) -> Task:
    """The task called ``name`` (``classification`` or ``segmentation``)."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}") from None


def task_for(split: ImageSplit) -> Task:
    """The task of a split's labels: masks ``[N, H, W]`` -> segmentation, labels ``[N]`` -> classification."""
    return SEGMENTATION if split.is_segmentation else CLASSIFICATION
