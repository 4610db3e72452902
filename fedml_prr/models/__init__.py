"""Model registries: every classification model maps images to ``(logits [B, C], features [B, feature_dim])``;
every segmentation model to ``(logits [B, C, H, W], bottleneck features [B, feature_dim, h, w])``.

Each registered model exposes ``feature_dim`` and ``classifier_key`` (the state-dict key of the
final classifier weight: ``[C, feature_dim]``, or ``[C, feature_dim, 1, 1]`` for the 1x1-conv
classifier of a segmentation net). Adding a model is one module plus one registration line
below; :func:`build_model` serves both registries.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from fedml_prr.models.resnet import ResNet18Features
from fedml_prr.models.segmentation import DeepLabResNet18, UNetSmall
from fedml_prr.models.vgg_slim import VGG16Slim
from fedml_prr.registry import Registry

MODELS: Registry[type[nn.Module]] = Registry("model")
MODELS.register("vgg16_slim")(VGG16Slim)
MODELS.register("resnet18")(ResNet18Features)

SEGMENTATION_MODELS: Registry[type[nn.Module]] = Registry("segmentation model")
SEGMENTATION_MODELS.register("deeplab_resnet18")(DeepLabResNet18)
SEGMENTATION_MODELS.register("unet_small")(UNetSmall)


def _model_class(name: str) -> type[nn.Module]:
    if name in SEGMENTATION_MODELS:
        return SEGMENTATION_MODELS.get(name)
    if name not in MODELS:
        known = ", ".join(MODELS.names() + SEGMENTATION_MODELS.names())
        raise KeyError(f"unknown model {name!r}; known models: {known}")
    return MODELS.get(name)


def model_task(name: str) -> str:
    """``"segmentation"`` or ``"classification"``: the task model ``name`` is registered for."""
    _model_class(name)
    return "segmentation" if name in SEGMENTATION_MODELS else "classification"


def model_options(name: str) -> list[str]:
    """The keyword options accepted by model ``name`` besides ``num_classes``."""
    parameters = inspect.signature(_model_class(name)).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build_model(name: str, *, num_classes: int, **options: Any) -> nn.Module:
    """Instantiate the registered model ``name``.

    Parameters
    ----------
    name:
        Registry name (case-insensitive), e.g. ``"vgg16_slim"`` or ``"deeplab_resnet18"``;
        unknown -> ``KeyError`` listing every model.
    num_classes:
        Number of output logits.
    **options:
        Model-specific keyword options (e.g. ``width`` for ``vgg16_slim``); an unknown one
        raises ``TypeError`` listing the valid options.
    """
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for model {name!r}; valid options: {', '.join(valid)}"
        )
    return _model_class(name)(num_classes, **options)


__all__ = ["MODELS", "SEGMENTATION_MODELS", "DeepLabResNet18", "ResNet18Features", "UNetSmall", "VGG16Slim",
           "build_model", "model_options", "model_task"]
