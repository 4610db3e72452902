"""Batching and evaluation passes shared by every algorithm's local training."""

from __future__ import annotations

from typing import Dict, Iterator, Tuple

import torch
from torch import nn

from ..core.metrics import classification_metrics
from ..data.augment import augment_batch, augment_segmentation_batch, to_model_input
from ..data.federation import ImageSplit
from ..devices import to_device


def batch_indices(n: int, batch_size: int, generator: torch.Generator, *, shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples (a fresh permutation from ``generator`` when shuffling).

    The last, smaller batch is kept unless it holds a single sample (BatchNorm cannot train on
    one sample), which is dropped.
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) == 1 and n > 1:
            return
        yield idx


def training_batches(split: ImageSplit, batch_size: int, generator: torch.Generator, *,
                     augment: bool = True) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled ``(inputs [B, 3, H, W] in [-1, 1], labels [B])`` batches of one epoch.

    Shuffling and augmentation both draw from ``generator`` (the client's own), so an epoch is
    reproducible from the generator state; the images stay on their device.  A segmentation
    split yields int64 masks ``[B, H, W]`` instead of labels, augmented with their images.
    """
    for idx in batch_indices(len(split), batch_size, generator):
        idx = to_device(idx, split.images.device)
        images = split.images[idx]
        if split.is_segmentation:
            masks = split.labels[idx]
            yield augment_segmentation_batch(images, masks, generator) if augment else (to_model_input(images), masks.long())
            continue
        yield (augment_batch(images, generator) if augment else to_model_input(images)), split.labels[idx]


@torch.no_grad()
def predict(model: nn.Module, split: ImageSplit, batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities ``[N, C]`` and labels ``[N]`` of ``model`` on ``split``, eval mode.

    Runs without autograd; restores the model's previous train/eval mode.
    """
    was_training = model.training
    model.eval()
    probs = []
    for start in range(0, len(split), batch_size):
        logits, _ = model(to_model_input(split.images[start:start + batch_size]))
        probs.append(torch.softmax(logits.float(), dim=1))
    model.train(was_training)
    return torch.cat(probs), split.labels


def evaluate(model: nn.Module, split: ImageSplit, num_classes: int, batch_size: int) -> Dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and OvR macro AUC of ``model`` on ``split`` (in [0, 1])."""
    if len(split) == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "macro_f1": float("nan"), "auc": float("nan"), "n": 0}
    probs, labels = predict(model, split, batch_size)
    metrics = classification_metrics(labels, probs, num_classes)
    metrics["n"] = len(split)
    return metrics
