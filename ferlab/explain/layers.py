"""``explain_layers``: one explanation per explainable layer, shallow to deep, from a single
forward (and, for Grad-CAM, a single backward) pass where the method allows."""
from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerAttribution

from ..preprocess import normalize, to_gray_uint8
from .core import (METHODS, ExplainError, Explanation, disable_inplace, explain, gradcam_pass, model_lock,
                   normalize_heatmap, resolve_target)
from .methods import top_channels


def _capture(module, names):
    acts, hooks = {}, []
    for n in names:
        hooks.append(module.get_layer(n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)))
    return acts, hooks


def explain_layers(model, image, method: str = "gradcam", target=None, top_k: int = 8, **options) -> list[Explanation]:
    """Explanations of one image at every explainable layer where ``method`` applies.

    ``gradcam`` and ``activations`` share one forward pass (and one backward) across layers;
    ``cam`` applies only at the layer before the pooling; other layer methods run per layer.
    """
    module = model.module
    layers = list(module.explainable_layers)
    if method == "cam":
        return [explain(model, image, "cam", target=target)]
    if method not in ("gradcam", "activations"):
        if method not in METHODS:
            raise ExplainError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if not METHODS[method].needs_layer:
            what = "every block's attention" if "attention" in METHODS[method].requires else "the input pixels"
            raise ExplainError(f"{method} explains {what}, not a layer: use explain() once")
        return [explain(model, image, method, layer=n, target=target, **options) for n in layers]

    size = int(model.card.get("input_size", 48))
    gray = to_gray_uint8(image, size)
    x = normalize(torch.from_numpy(gray)[None, None], model.card).to(model.device)
    with model_lock(module):
        disable_inplace(module)
        if method == "gradcam":
            logits, targets, raws = gradcam_pass(module, x, [module.get_layer(n) for n in layers], target)
        else:
            acts, hooks = _capture(module, layers)
            try:
                with torch.no_grad():
                    logits = module(x)
            finally:
                for h in hooks:
                    h.remove()
            targets = resolve_target(target, logits).to(logits.device)
    probs = torch.softmax(logits.detach().float(), dim=1)[0].cpu().numpy()
    out = []
    for i, n in enumerate(layers):
        if method == "gradcam":
            raw, extra = raws[i], {}
        else:
            a = module.feature_map(acts[n].detach()).float()
            raw, extra = a.mean(1, keepdim=True), top_channels(a[0], top_k)
        up = LayerAttribution.interpolate(torch.relu(raw), (size, size), interpolate_mode="bilinear")
        out.append(Explanation(heatmap=normalize_heatmap(up[0, 0].cpu().numpy()).astype(np.float32),
                               raw=raw[0].cpu().numpy(), method=method, layer=n, target=int(targets[0]),
                               probabilities=probs, image=gray, extra=extra))
    return out
