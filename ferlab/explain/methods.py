"""Explanation methods, one small class each.  Attributions come from Captum; the extra CAM
variants (Grad-CAM++, LayerCAM, Score-CAM, Eigen-CAM) from the ``grad-cam`` package."""
from __future__ import annotations

import numpy as np
import torch
from captum.attr import (GuidedGradCam, IntegratedGradients, LayerActivation, LayerAttribution, Occlusion,
                         Saliency)

from ..preprocess import normalize
from .core import ExplainError, Method, gradcam_pass, normalize_heatmap, register_method


def black_baseline(x: torch.Tensor, card: dict) -> torch.Tensor:
    """A black image in the model's normalized input space."""
    zeros = torch.zeros(x.shape[0], 1, x.shape[-2], x.shape[-1], device=x.device)
    return normalize(zeros, card)


class LayerMethod(Method):
    """Methods whose raw map lives at a conv layer's resolution."""

    def to_heatmap(self, raw: torch.Tensor, size: int) -> np.ndarray:
        up = LayerAttribution.interpolate(torch.relu(raw.detach().float()), (size, size), interpolate_mode="bilinear")
        return np.stack([normalize_heatmap(m) for m in up[:, 0].clamp_min(0).cpu().numpy()])


@register_method
class GradCAM(LayerMethod):
    name = "gradcam"
    description = "Grad-CAM (Selvaraju et al. 2017): layer activations weighted by their mean gradient, ReLU."

    def attribute(self, module, x, target, layer, model):
        return gradcam_pass(module, x, [layer], target)[2][0]

    def run(self, module, x, target, layer, model):
        # one forward and one backward pass give both the probabilities and the map
        logits, targets, (raw,) = gradcam_pass(module, x, [layer], target)
        return logits, targets, raw


@register_method
class CAM(LayerMethod):
    name = "cam"
    description = "CAM (Zhou et al. 2016): the last feature maps weighted by the class's linear weights."

    requires = ("cam",)

    def check(self, model, layer_name):
        super().check(model, layer_name)
        module = model.module
        if layer_name != module.cam_layer:
            raise ExplainError(f"CAM exists only at the layer feeding the pooling: {module.cam_layer}")

    def attribute(self, module, x, target, layer, model):
        with torch.no_grad():
            acts = LayerActivation(module, layer).attribute(x)
            weights = module.get_layer(module.cam_linear).weight[target]  # (N, K)
            return torch.einsum("nk,nkhw->nhw", weights.to(acts.dtype), acts).unsqueeze(1)


@register_method
class Activations(LayerMethod):
    name = "activations"
    description = "Layer activations: the mean feature map of a layer, and its top-k channels."

    def __init__(self, top_k: int = 8):
        self.top_k = int(top_k)
        self._extra: list[dict] = []

    def attribute(self, module, x, target, layer, model):
        with torch.no_grad():
            acts = module.feature_map(LayerActivation(module, layer).attribute(x)).float()
        self._extra = [top_channels(a, self.top_k) for a in acts]
        return acts.mean(1, keepdim=True)

    def extra_for(self, i: int) -> dict:
        return self._extra[i]


def top_channels(acts: torch.Tensor, k: int) -> dict:
    """The k channels of one image's ``(K, h, w)`` activations with the largest mean."""
    means = acts.mean(dim=(1, 2))
    idx = torch.argsort(means, descending=True)[:k]
    maps = acts[idx].cpu().numpy()
    return {"channels": idx.tolist(), "channel_means": means[idx].tolist(), "num_channels": int(acts.shape[0]),
            "maps": np.stack([normalize_heatmap(np.maximum(m - m.min(), 0)) for m in maps]) if len(maps) else maps}


class PixelMethod(Method):
    needs_layer = False
    signed = True


@register_method
class GuidedGradCAM(PixelMethod):
    name = "guided_gradcam"
    needs_layer = True
    requires = ("conv",)  # Captum's GuidedGradCam averages gradients over conv maps' spatial dims
    description = "Guided Grad-CAM: Grad-CAM times guided backpropagation, at pixel resolution."

    def attribute(self, module, x, target, layer, model):
        return GuidedGradCam(module, layer).attribute(x, target=target)


@register_method
class IntegratedGradientsMethod(PixelMethod):
    name = "integrated_gradients"
    signed = False  # show evidence for the target (positive attributions)
    description = "Integrated Gradients (Sundararajan et al. 2017) from a black image, positive part."

    def __init__(self, n_steps: int = 32):
        self.n_steps = int(n_steps)

    def attribute(self, module, x, target, layer, model):
        return IntegratedGradients(module).attribute(x, baselines=black_baseline(x, model.card), target=target,
                                                     n_steps=self.n_steps, internal_batch_size=64)


@register_method
class OcclusionMethod(PixelMethod):
    name = "occlusion"
    signed = False  # positive = hiding this patch lowers the target score
    description = "Occlusion: how much the target score drops when a black patch hides each region."

    def __init__(self, window: int = 6, stride: int = 3):
        self.window, self.stride = int(window), int(stride)

    def attribute(self, module, x, target, layer, model):
        c = x.shape[1]
        with torch.no_grad():
            return Occlusion(module).attribute(
                x, target=target, sliding_window_shapes=(c, self.window, self.window),
                strides=(c, self.stride, self.stride), baselines=black_baseline(x, model.card),
                perturbations_per_eval=64)


@register_method
class SaliencyMethod(PixelMethod):
    name = "saliency"
    description = "Saliency (Simonyan et al. 2014): absolute input gradient of the target score."

    def attribute(self, module, x, target, layer, model):
        return Saliency(module).attribute(x, target=target, abs=True)


class PytorchGradCamMethod(LayerMethod):
    """CAM variants computed by the ``grad-cam`` package (pytorch-grad-cam)."""

    cam_class_name = ""

    def attribute(self, module, x, target, layer, model):
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam_class = getattr(pytorch_grad_cam, self.cam_class_name)
        reshape = module.feature_map if module.tokens else None
        with cam_class(model=module, target_layers=[layer], reshape_transform=reshape) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = 64
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])
        return torch.from_numpy(np.asarray(maps, dtype=np.float32)).unsqueeze(1)


for _name, _cls, _doc in (("gradcam_pp", "GradCAMPlusPlus", "Grad-CAM++ (Chattopadhyay et al. 2018)"),
                          ("layercam", "LayerCAM", "LayerCAM (Jiang et al. 2021)"),
                          ("scorecam", "ScoreCAM", "Score-CAM (Wang et al. 2020): no gradients, masked forward passes"),
                          ("eigencam", "EigenCAM", "Eigen-CAM: first principal component of the activations; "
                                                   "class-agnostic")):
    register_method(type(_cls, (PytorchGradCamMethod,), {"name": _name, "cam_class_name": _cls,
                                                         "description": _doc + ", via pytorch-grad-cam."}))
