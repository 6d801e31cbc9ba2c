"""``explain_layers``: one explanation per explainable layer, shallow to deep, from a single
forward (and, for Grad-CAM, a single backward) pass where the method allows."""
from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerAttribution

from ..preprocess import to_batch, to_gray_uint8
from .core import METHODS, ExplainError, Explanation, disable_inplace, explain, model_lock, normalize_heatmap, \
    resolve_target
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
            raise ExplainError(f"{method} explains the input pixels, not a layer: use explain() once")
        return [explain(model, image, method, layer=n, target=target, **options) for n in layers]

    size = int(model.card.get("input_size", 48))
    gray = to_gray_uint8(image, size)
    x = to_batch(gray[None], model.card).to(model.device)
    with model_lock(module):
        disable_inplace(module)
        acts, hooks = _capture(module, layers)
        try:
            if method == "gradcam":
                with torch.enable_grad():
                    x.requires_grad_(True)
                    logits = module(x)
                    targets = resolve_target(target, logits).to(logits.device)
                    score = logits.gather(1, targets[:, None]).sum()
                    grads = torch.autograd.grad(score, [acts[n] for n in layers])
            else:
                with torch.no_grad():
                    logits = module(x)
                targets = resolve_target(target, logits).to(logits.device)
        finally:
            for h in hooks:
                h.remove()
    probs = torch.softmax(logits.detach().float(), dim=1)[0].cpu().numpy()
    out = []
    for i, n in enumerate(layers):
        a = acts[n].detach().float()
        if method == "gradcam":
            raw = torch.relu((grads[i].float().mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
            extra = {}
        else:
            raw = a.mean(1, keepdim=True)
            extra = top_channels(a[0], top_k)
        up = LayerAttribution.interpolate(torch.relu(raw), (size, size), interpolate_mode="bilinear")
        out.append(Explanation(heatmap=normalize_heatmap(up[0, 0].cpu().numpy()).astype(np.float32),
                               raw=raw[0].cpu().numpy(), method=method, layer=n, target=int(targets[0]),
                               probabilities=probs, image=gray, extra=extra))
    return out
