"""Vision transformers on timm's ``VisionTransformer``.

``vit``: sized for 48x48 grayscale faces.  A small convolutional stem (48 -> 24 -> 12 pixels,
Xiao et al. 2021, "Early convolutions help transformers see better") feeds 2x2 patches of its
12x12 map, a 6x6 grid of 36 tokens plus the class token, to 6 pre-norm blocks of width 192 with 3
heads.  The stem gives the transformer the locality a CNN has for free, which a ViT trained on
28,709 images alone does not learn; it costs about what the compact CNN costs per image.

``vit_tiny_patch16_224``: the report's network (timm's configuration of that name: 224x224 input,
16-pixel patches, 14x14 grid, 12 blocks of width 192), for users with ImageNet weights and a GPU.

Explainable layers are ``vit.blocks.<i>.norm1``: the tokens as block ``i`` reads them.  Not the
blocks' outputs: the head reads only the class token after the last block, so the last block's
patch tokens get no gradient and Grad-CAM there is empty by construction.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register
from .base import FERNet, conv_bn_relu
from .vgg import PretrainedWeightsUnavailable


class ConvStem(nn.Module):
    """Conv stem + patch projection, in the place of timm's ``PatchEmbed``: ``(B, C, H, W)`` ->
    ``(B, grid*grid, embed_dim)``.  Strided 3x3 convs halve the side per stage after the first."""

    def __init__(self, img_size=48, patch_size=2, in_chans=1, embed_dim=192, widths=(32, 64, 128), **_):
        super().__init__()
        stages, cin = [], in_chans
        for i, w in enumerate(widths):
            stages.append(conv_bn_relu(cin, w, stride=1 if i == 0 else 2))
            cin = w
        self.stem = nn.Sequential(*stages)
        reduction = 2 ** (len(widths) - 1) * patch_size
        if img_size % reduction:
            raise ValueError(f"input {img_size}px is not a multiple of the stem's reduction {reduction}")
        self.img_size = (img_size, img_size)
        self.patch_size = (reduction, reduction)    # input pixels per token, as timm reads it
        self.grid_size = (img_size // reduction, img_size // reduction)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(cin, embed_dim, patch_size, patch_size)

    def feat_ratio(self, as_scalar=True):
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x):
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


class ViTNet(FERNet):
    """A timm ``VisionTransformer`` as a ferlab model: its blocks' input tokens are the explainable
    layers; ``feature_map`` turns their patch tokens back into a ``(B, D, h, w)`` grid."""

    tokens = True

    def _wrap(self, vit: nn.Module):
        self.vit = vit
        depth = len(vit.blocks)
        self.grid = tuple(vit.patch_embed.grid_size)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.explainable_layers = tuple(f"vit.blocks.{i}.norm1" for i in range(depth))
        self.default_layer = self.explainable_layers[-1]
        self.attention_layers = tuple(f"vit.blocks.{i}.attn" for i in range(depth))
        self.num_heads = int(vit.blocks[0].attn.num_heads)

    def feature_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, prefix + h*w, D)`` tokens -> ``(B, D, h, w)``, the class token dropped."""
        patches = tokens[:, self.num_prefix_tokens:]
        h, w = self.grid
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], h, w)

    def forward(self, x):
        return self.vit(x)


@register("vit")
class ViTFER(ViTNet):
    def __init__(self, num_classes=7, in_channels=1, input_size=48, stem=(32, 64, 128), patch_size=2,
                 embed_dim=192, depth=6, num_heads=3, mlp_ratio=3.0, drop_path=0.1, dropout=0.0):
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size, stem=list(stem),
                         patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, drop_path=drop_path, dropout=dropout)
        from timm.models.vision_transformer import VisionTransformer

        def embed(**kw):
            return ConvStem(widths=tuple(stem), **kw)
        self._wrap(VisionTransformer(
            img_size=input_size, patch_size=patch_size, in_chans=in_channels, num_classes=num_classes,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_rate=dropout,
            drop_path_rate=drop_path, embed_layer=embed))


@register("vit_tiny_patch16_224")
class ViTTiny224(ViTNet):
    """timm's ``vit_tiny_patch16_224``; ``pretrained=True`` loads its ImageNet weights from the Hub
    (timm adapts the patch projection to 1 channel) or fails with a clear message."""

    def __init__(self, num_classes=7, in_channels=3, input_size=224, pretrained=False, drop_path=0.1):
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                         pretrained=pretrained, drop_path=drop_path)
        import timm
        try:
            vit = timm.create_model("vit_tiny_patch16_224", pretrained=pretrained, num_classes=num_classes,
                                    in_chans=in_channels, img_size=input_size, drop_path_rate=drop_path)
        except Exception as exc:
            if not pretrained:
                raise
            raise PretrainedWeightsUnavailable(
                f"could not load ImageNet weights for vit_tiny_patch16_224 ({type(exc).__name__}: {exc}); the "
                "download is unreachable here. Put them in the Hugging Face cache (HF_HOME) or train from "
                "scratch with pretrained=False.") from exc
        self._wrap(vit)
