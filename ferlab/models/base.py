from __future__ import annotations

import threading
import weakref

import torch
from torch import nn


class FERNet(nn.Module):
    """What every ferlab model tells the explanation engine about itself."""

    architecture: str = ""
    #: module names (as in ``named_modules``) whose outputs are spatial feature maps, shallow to deep
    explainable_layers: tuple[str, ...] = ()
    #: the layer Grad-CAM uses unless told otherwise
    default_layer: str = ""
    #: for CAM (Zhou et al. 2016): the layer feeding global average pooling, and the single
    #: linear layer after it; ``None`` where the head is not GAP + one linear
    cam_layer: str | None = None
    cam_linear: str | None = None
    #: transformers: explainable layers output tokens, which ``feature_map`` lays out as a grid
    tokens: bool = False

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)
        self.in_channels = int(config.get("in_channels", 1))
        self.input_size = int(config.get("input_size", 48))
        self.num_classes = int(config.get("num_classes", 7))

    @property
    def supports_cam(self) -> bool:
        return self.cam_layer is not None and self.cam_linear is not None

    def get_layer(self, name: str) -> nn.Module:
        modules = dict(self.named_modules())
        if name not in modules:
            raise ValueError(f"{self.architecture} has no layer {name!r}; explainable layers: "
                             f"{', '.join(self.explainable_layers)}")
        return modules[name]

    def feature_map(self, output: torch.Tensor) -> torch.Tensor:
        """An explainable layer's output as ``(B, C, h, w)``: conv maps are that already."""
        return output

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.in_channels, self.input_size, self.input_size)


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(module: nn.Module) -> threading.RLock:
    """The lock every ferlab forward pass on ``module`` holds: explanation hooks on a shared
    model must never see another thread's forward pass."""
    with _locks_guard:
        lock = _locks.get(module)
        if lock is None:
            lock = _locks[module] = threading.RLock()
        return lock
