"""Transformer-aware explanations: attention rollout and gradient-weighted attention rollout.

Both follow the class token's attention back through every block to the patch tokens, so their
map lives on the patch grid (6x6 for ``vit``).  Grad-CAM on a block's tokens is the engine's
``gradcam`` (the tokens laid out on their grid by the model's ``feature_map``).

* ``rollout`` (Abnar & Zuidema 2020): per block, the heads' mean attention with the residual
  connection added as identity, ``0.5 A + 0.5 I``, multiplied through the blocks.  It does not
  depend on the target class: it shows where information flows into the class token.
* ``attention_gradcam`` (Chefer et al. 2021, "Generic attention-model explainability"): per block,
  the heads' mean of ``ReLU(dy/dA * A)``, accumulated as ``R <- R + A_bar R`` from ``R = I``; class
  specific, from one forward and one backward pass.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .core import Method, normalize_heatmap, register_method, resolve_target


@contextmanager
def captured_attention(module):
    """Collect each block's attention probabilities ``(N, heads, T, T)`` during the forward passes
    inside the context.  timm computes attention fused (no weights) by default; the context turns
    that off and reads the probabilities where they enter the attention dropout (identity in eval),
    then restores everything."""
    found: dict[int, torch.Tensor] = {}
    blocks = [module.get_layer(name) for name in module.attention_layers]
    fused = [attn.fused_attn for attn in blocks]
    hooks = []
    try:
        for i, attn in enumerate(blocks):
            attn.fused_attn = False
            hooks.append(attn.attn_drop.register_forward_hook(lambda m, inp, out, i=i: found.__setitem__(i, out)))
        yield found
    finally:
        for h in hooks:
            h.remove()
        for attn, f in zip(blocks, fused):
            attn.fused_attn = f


def attention_rollout(attentions: list[torch.Tensor], prefix: int = 1, residual: float = 0.5) -> torch.Tensor:
    """Abnar & Zuidema's rollout of per-block attention ``(N, heads, T, T)``, first block first:
    ``R = prod_b (residual I + (1 - residual) mean_h A_b)`` (the last block leftmost).  Returns the
    class token's row over the patch tokens, ``(N, T - prefix)``."""
    n, _, t, _ = attentions[0].shape
    eye = torch.eye(t, dtype=attentions[0].dtype, device=attentions[0].device)
    r = eye.expand(n, t, t)
    for a in attentions:
        r = (residual * eye + (1 - residual) * a.mean(1)) @ r
    return r[:, 0, prefix:]


def gradient_rollout(attentions: list[torch.Tensor], gradients: list[torch.Tensor], prefix: int = 1) -> torch.Tensor:
    """Chefer et al. 2021 for self-attention: ``R = I``; per block ``R <- R + mean_h ReLU(grad * A) R``.
    Returns the class token's row over the patch tokens, ``(N, T - prefix)``."""
    n, _, t, _ = attentions[0].shape
    r = torch.eye(t, dtype=attentions[0].dtype, device=attentions[0].device).expand(n, t, t)
    for a, g in zip(attentions, gradients):
        r = r + (g * a).clamp_min(0).mean(1) @ r
    return r[:, 0, prefix:]


def class_token_heads(attentions: list[torch.Tensor], prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """What the class token attends to, per block and head: ``(N, blocks, heads, h, w)`` in [0, 1]."""
    rows = torch.stack([a[:, :, 0, prefix:] for a in attentions], dim=1)  # (N, B, H, patches)
    rows = rows.reshape(*rows.shape[:3], *grid).float().cpu().numpy()
    return np.stack([[[normalize_heatmap(m) for m in block] for block in image] for image in rows])


class AttentionMethod(Method):
    """Base of the rollout methods: one pass that captures every block's attention (and, when the
    method uses them, its gradients for the target), then ``combine`` to the class token's row."""

    needs_layer = False
    requires = ("attention",)
    uses_gradient: bool = False

    def __init__(self):
        self._heads: np.ndarray | None = None

    def combine(self, attentions: list[torch.Tensor], gradients: list[torch.Tensor] | None,
                prefix: int) -> torch.Tensor:
        """The class token's row over the patch tokens, ``(N, patches)``."""
        raise NotImplementedError

    def run(self, module, x, target, layer, model):
        with captured_attention(module) as found, torch.set_grad_enabled(self.uses_gradient):
            logits = module(x.detach().requires_grad_(self.uses_gradient))
            targets = resolve_target(target, logits).to(logits.device)
            attentions = [found[i] for i in range(len(found))]
            gradients = None
            if self.uses_gradient:
                gradients = [g.float() for g in
                             torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), attentions)]
        attentions = [a.detach().float() for a in attentions]
        self._heads = class_token_heads(attentions, module.num_prefix_tokens, module.grid)
        row = self.combine(attentions, gradients, module.num_prefix_tokens)
        return logits.detach(), targets, row.reshape(row.shape[0], 1, *module.grid)

    def attribute(self, module, x, target, layer, model):
        return self.run(module, x, target, layer, model)[2]

    def extra_for(self, i: int) -> dict:
        return {"class_token_heads": self._heads[i]} if self._heads is not None else {}


@register_method
class Rollout(AttentionMethod):
    name = "rollout"
    description = ("Attention rollout (Abnar & Zuidema 2020): the class token's attention followed back through "
                   "every block. Class-agnostic: the same map for every target.")

    def combine(self, attentions, gradients, prefix):
        return attention_rollout(attentions, prefix)


@register_method
class AttentionGradCAM(AttentionMethod):
    name = "attention_gradcam"
    uses_gradient = True
    description = ("Gradient-weighted attention rollout (Chefer et al. 2021): each block's attention weighted by "
                   "its gradient for the target class, positive part, accumulated through the blocks.")

    def combine(self, attentions, gradients, prefix):
        return gradient_rollout(attentions, gradients, prefix)
