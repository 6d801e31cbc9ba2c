"""Layers tab: Grad-CAM (and CAM where it applies) at every layer, shallow to deep, the top-k
activation maps of one layer, and for a transformer what its class token attends to, per block and
head, with the rollout through all blocks."""
from __future__ import annotations

import functools

import gradio as gr

from ..explain import ExplainError, explain, explain_layers, overlay_heatmap
from ..labels import EMOTIONS
from .common import ModelRegistry, OutputGallery, SafeImage, colorize, gpu, largest_face, user_errors
from .explain_tab import PREDICTED, _target, applicable_methods, layer_choices


@user_errors
def layer_grid(registry: ModelRegistry, image, model_name: str, target: str | None, act_layer: str | None,
               alpha: float = 0.5, top_k: int = 8):
    """-> (Grad-CAM gallery, CAM gallery, activation gallery, attention gallery, caption markdown)."""
    model = registry.get(model_name)
    face, big, _ = largest_face(image, int(model.card.get("input_size", 48)), 160)
    grads = explain_layers(model, face, "gradcam", target=_target(target))
    grad_items = [(g.overlay(big, alpha), f"{i + 1}. {g.layer}" + ("" if g.heatmap.max() > 0 else " (empty)"))
                  for i, g in enumerate(grads)]
    try:
        cam = explain(model, face, "cam", target=grads[0].target)
        cam_items = [(cam.overlay(big, alpha), f"CAM at {cam.layer}")]
        cam_note = "CAM exists only at the last feature map (global pooling + one linear layer)."
    except ExplainError as exc:
        cam_items, cam_note = [], f"CAM: {exc}"
    layer = act_layer if act_layer in model.module.explainable_layers else model.module.default_layer
    acts = explain(model, face, "activations", layer=layer, top_k=top_k)
    act_items = [(colorize(m, "viridis", 120), f"channel {c}") for m, c in
                 zip(acts.extra["maps"], acts.extra["channels"])]
    h, w = acts.raw.shape[-2:]
    if model.module.tokens:
        depth_note = ("each block reads the tokens of the one before: early blocks mix neighbouring patches, late "
                      f"blocks the whole face, always on the same {h}x{w} patch grid")
    else:
        depth_note = ("shallow layers see edges and textures at fine resolution; deep layers see parts of the face at "
                      "coarse resolution")
    caption = (f"**Grad-CAM rows**, shallow (left) to deep (right), for class **{EMOTIONS[grads[0].target]}**: "
               f"{depth_note}. {cam_note}\n\n**Activations**: the {top_k} most active channels of `{layer}` "
               f"({acts.extra['num_channels']} channels, {h}x{w}), whatever the class.")
    attention_items = []
    if shows_attention(model.card):
        rollout = explain(model, face, "rollout", target=grads[0].target)
        heads = rollout.extra["class_token_heads"]
        attention_items = [(overlay_heatmap(big, heads[b, k], alpha), f"block {b + 1}, head {k + 1}")
                           for b in range(heads.shape[0]) for k in range(heads.shape[1])]
        attention_items.append((rollout.overlay(big, alpha), "rollout through all blocks"))
        caption += (f"\n\n**Attention**: what the class token attends to in each block, one image per head "
                    f"({heads.shape[1]} heads), then the rollout through all blocks (Abnar & Zuidema 2020). "
                    "Attention is where information is read from, not evidence for a class.")
    return grad_items, cam_items, act_items, attention_items, caption


def shows_cam(card: dict | None) -> bool:
    """Whether the CAM gallery belongs on screen: CAM is among the methods that apply to the model."""
    return card is not None and "cam" in applicable_methods(card)[0]


def shows_attention(card: dict | None) -> bool:
    """Whether the attention gallery belongs on screen: the model is a transformer."""
    return card is not None and "rollout" in applicable_methods(card)[0]


def build(registry: ModelRegistry, models: list[str]):
    default = registry.default()
    with gr.Tab("Layers"):
        with gr.Row():
            image = SafeImage(label="image", elem_id="layers-input")
            with gr.Column():
                model = gr.Dropdown(models, value=default, label="model")
                target = gr.Dropdown([PREDICTED] + list(EMOTIONS), value=PREDICTED, label="target class")
                first = registry.card(default) if default else None  # the card: no weights loaded at start-up
                act_layer = gr.Dropdown(first["explainable_layers"] if first else [],
                                        value=first["default_layer"] if first else None, label="activations of layer")
                alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="overlay opacity")
                button = gr.Button("Show every layer", variant="primary", elem_id="layers-button")
        caption = gr.Markdown(elem_id="layers-caption")
        grad_gallery = OutputGallery(label="Grad-CAM at every layer (shallow → deep)", columns=8, height=240,
                                     object_fit="contain", elem_id="layers-gallery")
        cam_gallery = OutputGallery(label="CAM", columns=8, height=240, object_fit="contain",
                                    visible=shows_cam(first))
        act_gallery = OutputGallery(label="top activation maps", columns=8, height=240, object_fit="contain")
        attention_gallery = OutputGallery(label="class-token attention per block and head", columns=6, height=240,
                                          object_fit="contain", visible=shows_attention(first))
        model.change(functools.partial(layer_choices, registry), model, act_layer)
        model.change(lambda name: (gr.update(visible=shows_cam(registry.card(name) if name else None)),
                                   gr.update(visible=shows_attention(registry.card(name) if name else None))),
                     model, [cam_gallery, attention_gallery])
        button.click(gpu(functools.partial(layer_grid, registry)), [image, model, target, act_layer, alpha],
                     [grad_gallery, cam_gallery, act_gallery, attention_gallery, caption], api_name="layers")
