"""The model registry: every entry is a :class:`ModelSpec` carrying the class and its task.

Every classification model maps images to ``(logits [B, C], features [B, feature_dim])``; every
segmentation model to ``(logits [B, C, H, W], bottleneck features [B, feature_dim, h, w])``.
Each registered model exposes ``feature_dim`` and ``classifier_key`` (the state-dict key of the
final classifier weight: ``[C, feature_dim]``, or ``[C, feature_dim, 1, 1]`` for the 1x1-conv
classifier of a segmentation net), and the static methods ``min_image_size(**options)`` and
``image_size_multiple(**options)``, its input-size rule computed from the architecture.
Adding a model is one module plus one registration line below.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from torch import nn

from fedml_prr.models.resnet import ResNet18Features
from fedml_prr.models.segmentation import DeepLabResNet18, UNetSmall
from fedml_prr.models.vgg_slim import VGG16Slim
from fedml_prr.registry import Registry, check_options

#: The tasks a model (and a dataset) can be for.
TASKS = ("classification", "segmentation")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes
    ----------
    name:
        The registered name.
    model_class:
        ``model_class(num_classes, **options)`` builds it.
    task:
        ``"classification"`` or ``"segmentation"``.
    """

    name: str
    model_class: type
    task: str

    @property
    def options(self) -> Dict[str, Any]:
        """The keyword options of the constructor besides ``num_classes``, with their defaults."""
        parameters = inspect.signature(self.model_class).parameters.values()
        return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


MODELS: Registry[ModelSpec] = Registry("model")
"""Every registered model, by name (case-insensitive)."""


def register_model(name: str, model_class: type, *, task: str) -> None:
    """Register ``model_class`` as model ``name`` for ``task``; the class provides the
    ``min_image_size`` and ``image_size_multiple`` static methods."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    for method in ("min_image_size", "image_size_multiple"):
        if not callable(getattr(model_class, method, None)):
            raise TypeError(f"{model_class.__name__} lacks the static method {method}(**options)")
    MODELS.register(name)(ModelSpec(name, model_class, task))


register_model("vgg16_slim", VGG16Slim, task="classification")
register_model("resnet18", ResNet18Features, task="classification")
register_model("deeplab_resnet18", DeepLabResNet18, task="segmentation")
register_model("unet_small", UNetSmall, task="segmentation")


def _spec(name: str, options: Dict[str, Any]) -> ModelSpec:
    spec = MODELS.get(name)
    check_options("model", spec.name, options, spec.options)
    return spec


def model_names(task: Optional[str] = None) -> List[str]:
    """Registered model names, sorted; only those for ``task`` when given."""
    return [n for n in MODELS.names() if task is None or MODELS.get(n).task == task]


def model_task(name: str) -> str:
    """``"segmentation"`` or ``"classification"``: the task model ``name`` is registered for."""
    return MODELS.get(name).task


def model_options(name: str) -> list[str]:
    """The keyword options accepted by model ``name`` besides ``num_classes``."""
    return list(MODELS.get(name).options)


def min_image_size(name: str, **options: Any) -> int:
    """The smallest square input side model ``name`` accepts with ``options`` (from its
    architecture: its pools and strided layers); an unknown option raises ``ValueError``."""
    return int(_spec(name, options).model_class.min_image_size(**options))


def check_image_size(name: str, image_size: int, **options: Any) -> None:
    """Raise a one-line ``ValueError`` if model ``name`` cannot take ``image_size`` square inputs:
    below :func:`min_image_size`, or not a multiple of the side its skip connections need."""
    model_class = _spec(name, options).model_class
    smallest, multiple = int(model_class.min_image_size(**options)), int(model_class.image_size_multiple(**options))
    if image_size < smallest or image_size % multiple:
        rule = f"at least {smallest} px" + (f" and a multiple of {multiple}" if multiple > 1 else "")
        raise ValueError(f"model {name!r} with options {options or '{}'} needs an image size {rule}, got {image_size} "
                         "(prr_image_size)")


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
        Model-specific keyword options (e.g. ``width`` for ``vgg16_slim``); an unknown one raises
        :class:`~fedml_prr.registry.UnknownOptionError`, a one-line ``ValueError`` (also a
        ``TypeError``) naming the model, the bad keys and the valid options.
    """
    return _spec(name, options).model_class(num_classes, **options)


__all__ = ["MODELS", "ModelSpec", "DeepLabResNet18", "ResNet18Features", "UNetSmall", "VGG16Slim", "build_model",
           "check_image_size", "min_image_size", "model_names", "model_options", "model_task", "register_model"]
