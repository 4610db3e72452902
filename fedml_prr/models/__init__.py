"""Model registry: every model maps images to ``(logits [B, C], features [B, feature_dim])``.

Each registered model exposes ``feature_dim`` and ``classifier_key`` (the state-dict key of the
final classifier weight, ``[C, feature_dim]``). Adding a model is one module plus one
registration line below.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from fedml_prr.models.resnet import ResNet18Features
from fedml_prr.models.vgg_slim import VGG16Slim
from fedml_prr.registry import Registry

MODELS: Registry[type[nn.Module]] = Registry("model")
MODELS.register("vgg16_slim")(VGG16Slim)
MODELS.register("resnet18")(ResNet18Features)


def model_options(name: str) -> list[str]:
    """The keyword options accepted by model ``name`` besides ``num_classes``."""
    parameters = inspect.signature(MODELS.get(name)).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build_model(name: str, *, num_classes: int, **options: Any) -> nn.Module:
    """Instantiate the registered model ``name``.

    Parameters
    ----------
    name:
        Registry name (case-insensitive), e.g. ``"vgg16_slim"``; unknown -> ``KeyError``.
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
    return MODELS.get(name)(num_classes, **options)


__all__ = ["MODELS", "ResNet18Features", "VGG16Slim", "build_model", "model_options"]
