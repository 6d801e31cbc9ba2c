"""The explanation engine's small core: ``Explanation``, the ``Method`` base class and ``explain``.

Each method is a tiny subclass of :class:`Method` (see ``methods.py``) that turns a normalized
input batch into a raw attribution; the base class handles inputs, targets, probabilities,
upsampling and normalization, so every method returns the same kind of ``Explanation``.

Concurrency: attribution libraries put hooks on the model while they run, and a hook on a
shared module would see other threads' forward passes.  Every forward pass that ferlab makes
on a model (``predict`` included) therefore holds that model's lock (``model_lock``); calls on
one shared model from several threads give exactly the serial results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..labels import EMOTIONS, emotion_index
from ..models.base import model_lock
from ..preprocess import normalize, to_gray_uint8

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO,
             "viridis": cv2.COLORMAP_VIRIDIS, "magma": cv2.COLORMAP_MAGMA, "hot": cv2.COLORMAP_HOT,
             "plasma": cv2.COLORMAP_PLASMA}

class ExplainError(ValueError):
    """A request the chosen model or method cannot serve; the message is for the user."""


def color_heatmap(heatmap: np.ndarray, width: int, height: int, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] heatmap resized (bicubic) to ``width x height`` and colored: RGB uint8."""
    if colormap not in COLORMAPS:
        raise ExplainError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    heat = cv2.resize(np.clip(heatmap, 0, 1).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), COLORMAPS[colormap]),
                        cv2.COLOR_BGR2RGB)


def overlay_heatmap(image: Any, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet",
                    size: int | None = None) -> np.ndarray:
    """Lay a [0, 1] heatmap over an image; returns RGB uint8.  Each pixel's opacity is ``alpha``
    times the map's value there, so where the map finds no evidence the image shows as it is
    (an empty map leaves the image unchanged instead of tinting it).

    ``image``: an RGB uint8 array framed like the model input (e.g. a face crop) is used as
    is; anything else goes through ``to_gray_uint8`` (centred square).  ``size``: output side.
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        base = image
    else:
        base = cv2.cvtColor(to_gray_uint8(image, size=None), cv2.COLOR_GRAY2RGB)
    if size is not None and base.shape[:2] != (size, size):
        base = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    h, w = base.shape[:2]
    heat = np.clip(cv2.resize(np.clip(heatmap, 0, 1).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)
    colored = color_heatmap(heat, w, h, colormap)
    weight = float(np.clip(alpha, 0.0, 1.0)) * heat[..., None]
    return np.uint8(np.clip(base.astype(np.float32) * (1 - weight) + colored.astype(np.float32) * weight, 0, 255))


@dataclass
class Explanation:
    """One explanation of one image.

    ``heatmap``: float32 at the model's input resolution, in [0, 1] (1 = most relevant).
    ``raw``: the unnormalized attribution at its native resolution (layer or input).
    """

    heatmap: np.ndarray
    raw: np.ndarray
    method: str
    layer: str | None
    target: int
    probabilities: np.ndarray
    image: np.ndarray                      # the model's grayscale input (uint8), for overlays
    extra: dict = field(default_factory=dict)

    @property
    def target_name(self) -> str:
        return EMOTIONS[self.target]

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))

    def overlay(self, image: Any = None, alpha: float = 0.5, colormap: str = "jet",
                size: int | None = None) -> np.ndarray:
        """RGB uint8 overlay on ``image`` (default: the model's grayscale input)."""
        return overlay_heatmap(self.image if image is None else image, self.heatmap, alpha, colormap, size)


def normalize_heatmap(attr: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1] by its maximum (all-zero stays zero)."""
    attr = np.nan_to_num(np.asarray(attr, dtype=np.float32))
    top = float(attr.max()) if attr.size else 0.0
    return attr / top if top > 0 else np.zeros_like(attr)


def resolve_target(target, logits: torch.Tensor) -> torch.Tensor:
    """Per-image target indices: predicted class when ``target`` is None."""
    n = logits.shape[0]
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, (list, tuple, np.ndarray, torch.Tensor)):
        idx = [emotion_index(t) for t in (target.tolist() if hasattr(target, "tolist") else target)]
        if len(idx) != n:
            raise ExplainError(f"{len(idx)} targets for {n} images")
        return torch.tensor(idx, dtype=torch.long)
    try:
        return torch.full((n,), emotion_index(target), dtype=torch.long)
    except ValueError as exc:
        raise ExplainError(str(exc)) from exc


def disable_inplace(module: nn.Module) -> None:
    """Turn in-place activations off: hooks and guided backprop need the original tensors.
    Outputs are identical; it only costs a little memory."""
    for m in module.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False


class Method:
    """Base of every explanation method.  A subclass sets ``name`` and implements ``attribute``."""

    name: ClassVar[str] = ""
    needs_layer: ClassVar[bool] = True      # uses a conv layer (else: input-space attribution)
    #: what the method needs of the model: "cam" (GAP + one linear), "conv" (conv feature maps,
    #: not transformer tokens), "attention" (a transformer's attention); empty: any model
    requires: ClassVar[tuple[str, ...]] = ()
    signed: ClassVar[bool] = False          # raw attributions carry sign (pixel methods)
    description: ClassVar[str] = ""

    def attribute(self, module: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: nn.Module | None,
                  model) -> torch.Tensor:
        """Raw attribution: ``(N, 1 or C, h, w)`` tensor (layer- or input-resolution)."""
        raise NotImplementedError

    def run(self, module: nn.Module, x: torch.Tensor, target, layer: nn.Module | None,
            model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, targets, raw)``: a forward pass for the probabilities and the default targets,
        then ``attribute``.  Methods that need the forward pass anyway (Grad-CAM) override this
        to make it one pass."""
        with torch.no_grad():
            logits = module(x)
        targets = resolve_target(target, logits).to(x.device)
        return logits, targets, self.attribute(module, x, targets, layer, model)

    def check(self, model, layer_name: str | None) -> None:
        """Raise ExplainError where this method cannot explain this model."""
        why = unavailable(type(self), {"supports_cam": model.module.supports_cam, "tokens": model.module.tokens})
        if why:
            raise ExplainError(f"{self.name} cannot explain {model.name}: {why}")

    def extra_for(self, i: int) -> dict:
        """Method-specific results for image ``i`` of the last ``attribute`` call (e.g. top channels)."""
        return {}

    def to_heatmap(self, raw: torch.Tensor, size: int) -> np.ndarray:
        """(N, C, h, w) raw -> (N, size, size) heatmaps in [0, 1]."""
        r = raw.detach().float()
        r = r.abs().sum(1, keepdim=True) if self.signed else F.relu(r.sum(1, keepdim=True))
        if r.shape[-1] != size or r.shape[-2] != size:
            r = F.interpolate(r, size=(size, size), mode="bilinear", align_corners=False)
        return np.stack([normalize_heatmap(m) for m in r[:, 0].clamp_min(0).cpu().numpy()])


def gradcam_pass(module: nn.Module, x: torch.Tensor, layers: list[nn.Module],
                 target) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Grad-CAM at several layers from one forward and one backward pass: ``(logits, targets,
    [ReLU(sum_k mean(dy/dA_k) A_k)] per layer, each (N, 1, h, w))``.  The caller holds the model's
    lock; the hooks are removed whatever happens."""
    acts: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, j=j: acts.__setitem__(j, o)) for j, layer in enumerate(layers)]
    try:
        with torch.enable_grad():
            logits = module(x.detach().requires_grad_(True))
            targets = resolve_target(target, logits).to(logits.device)
            score = logits.gather(1, targets[:, None]).sum()
            grads = torch.autograd.grad(score, [acts[j] for j in range(len(layers))])
    finally:
        for h in hooks:
            h.remove()
    as_map = module.feature_map  # transformer tokens -> (N, D, h, w) patch grid; conv maps unchanged
    raws = []
    for j, g in enumerate(grads):
        a, g = as_map(acts[j].detach()).float(), as_map(g).float()
        raws.append(torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True)))
    return logits.detach(), targets, raws


METHODS: dict[str, type[Method]] = {}

REQUIREMENTS = {
    "cam": ("supports_cam", True, "CAM needs global average pooling followed by a single linear layer, and this "
                                  "model's head is deeper (Grad-CAM is its generalisation)"),
    "conv": ("tokens", False, "it needs convolutional feature maps, and this model's layers output transformer "
                              "tokens (use Grad-CAM, which lays the tokens out on their patch grid)"),
    "attention": ("tokens", True, "attention rollouts read a transformer's attention, and this model is a CNN"),
}


def unavailable(method: type[Method], card: dict) -> str | None:
    """Why ``method`` cannot explain the model with this card (``None``: it can)."""
    for need in method.requires:
        key, value, why = REQUIREMENTS[need]
        if bool(card.get(key, False)) != value:
            return why
    return None


def applicable_methods(card: dict | None) -> tuple[list[str], dict[str, str]]:
    """The methods that can explain the model with this card, and why each other one cannot."""
    if card is None:
        return list(METHODS), {}
    reasons = {name: unavailable(cls, card) for name, cls in METHODS.items()}
    return [n for n, r in reasons.items() if r is None], {n: r for n, r in reasons.items() if r}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def explain(model, image, method: str = "gradcam", layer: str | None = None, target=None, **options):
    """Explain ``model``'s decision on one image, or on each image of a list (returns a list).

    ``image``: one image (PIL, numpy array, bytes); a ``list`` or ``tuple`` is a batch, anything
    else one image.  It is framed as a face crop (centred square, resized): photos go through
    ``ferlab.analyze``, which finds the faces first.  ``model``: a ``FERClassifier`` from
    ``load_model``.  ``layer``: one of the model's explainable layers (default: its default layer).
    ``target``: class index or name (default: the predicted class).  ``options`` go to the method
    (e.g. ``n_steps``).
    """
    batched = isinstance(image, (list, tuple))
    size = int(model.card.get("input_size", 48))
    images = list(image) if batched else [image]
    crops = np.stack([to_gray_uint8(im, size) for im in images]) if images else np.empty((0, size, size), np.uint8)
    out = explain_crops(model, crops, method, layer, target, **options)
    return out if batched else out[0]


def explain_crops(model, crops: np.ndarray, method: str = "gradcam", layer: str | None = None, target=None,
                  **options) -> list[Explanation]:
    """Explain a stack of face crops: uint8 ``(N, S, S)`` at the model's input size, one
    ``Explanation`` each.  Probabilities come from the same forward pass as the attribution
    where the method allows (Grad-CAM: one forward and one backward pass for the whole stack)."""
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    size = int(model.card.get("input_size", 48))
    crops = np.asarray(crops)
    if crops.ndim != 3 or crops.shape[1:] != (size, size) or crops.dtype != np.uint8:
        raise ExplainError(f"explain_crops takes a uint8 stack (N, {size}, {size}); got {crops.dtype} {crops.shape}")
    impl = METHODS[method](**options)
    module = model.module
    layer_name = (layer or module.default_layer) if impl.needs_layer else None
    if layer_name is not None and layer_name not in module.explainable_layers:
        raise ExplainError(f"{model.name}: no explainable layer {layer_name!r}; "
                           f"choose one of {', '.join(module.explainable_layers)}")
    impl.check(model, layer_name)
    if len(crops) == 0:
        return []
    x = normalize(torch.from_numpy(crops).unsqueeze(1), model.card).to(model.device)
    with model_lock(module):
        disable_inplace(module)
        layer_module = module.get_layer(layer_name) if layer_name else None
        logits, targets, raw = impl.run(module, x, target, layer_module, model)
    probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
    heatmaps = impl.to_heatmap(raw, size)
    raw_np = raw.detach().float().cpu().numpy()
    return [Explanation(heatmap=heatmaps[i].astype(np.float32), raw=raw_np[i], method=method, layer=layer_name,
                        target=int(targets[i]), probabilities=probs[i], image=crops[i], extra=impl.extra_for(i))
            for i in range(len(crops))]
