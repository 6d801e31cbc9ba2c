"""Model registry: ``create_model(name, **cfg)``; one small file per family.

Every model is a :class:`FERNet`: besides ``forward`` it names its explainable conv layers
(shallow to deep), its default Grad-CAM layer, and, when the network ends in global average
pooling followed by a single linear layer, the layer and linear that plain CAM needs.
"""
from __future__ import annotations

from typing import Callable

from .base import FERNet

_REGISTRY: dict[str, Callable[..., FERNet]] = {}


def register(name: str):
    def add(factory):
        _REGISTRY[name] = factory
        return factory
    return add


def create_model(name: str, **cfg) -> FERNet:
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    model = _REGISTRY[name](**cfg)
    model.architecture = name
    return model


def list_architectures() -> list[str]:
    return sorted(_REGISTRY)


from . import cnn, resnet_se, vgg, torchvision_nets, vit  # noqa: E402,F401  (they register themselves)

__all__ = ["FERNet", "create_model", "list_architectures", "register"]
