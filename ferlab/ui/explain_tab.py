"""Explain tab: any method, any layer, any target class; faithfulness and the sanity check."""
from __future__ import annotations

import functools

import gradio as gr

from ..explain import explain, faithfulness, sanity_check
from ..explain import applicable_methods as engine_methods
from ..labels import EMOTIONS
from .common import COLORMAP_NAMES, ModelRegistry, OutputImage, SafeImage, colorize, gpu, largest_face, probs_dict, user_errors

PREDICTED = "predicted class"

METHOD_NOTES = {
    "gradcam": "Where the chosen layer's features support the target class. Coarse: its resolution is the layer's.",
    "cam": "Only for models whose head is global pooling + one linear layer; equals Grad-CAM up to scale there.",
    "activations": "What the layer responds to, whatever the class: not an explanation of the decision.",
    "guided_gradcam": "Sharp pixel detail times Grad-CAM. Guided backpropagation is known to partly ignore the "
                      "model (Adebayo et al. 2018): run the sanity check.",
    "integrated_gradients": "Pixel attribution from a black image to this one (positive evidence only).",
    "occlusion": "How much hiding each patch lowers the target probability. Slow but model-agnostic.",
    "saliency": "Absolute gradient of the target score per pixel: noisy, local sensitivity.",
    "eigencam": "Class-agnostic: the same map for every target class.",
    "rollout": "Class-agnostic: where information flows into the class token, through every block's attention.",
    "attention_gradcam": "Each block's attention weighted by its gradient for the target, through every block.",
}


def layer_choices(registry: ModelRegistry, model_name: str):
    """Dropdown update with the chosen model's explainable layers (deepest = default)."""
    if not model_name:
        return gr.update(choices=[], value=None)
    card = registry.card(model_name)
    return gr.update(choices=list(card["explainable_layers"]), value=card["default_layer"])


def applicable_methods(card: dict | None) -> tuple[list[str], str]:
    """The methods that can explain a model with this card, and a line on those left out."""
    methods, reasons = engine_methods(card)
    grouped: dict[str, list[str]] = {}
    for name, why in reasons.items():
        grouped.setdefault(why, []).append(f"`{name}`")
    note = " ".join(f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} not offered for "
                    f"`{card['architecture']}`: {why}." for why, names in grouped.items())
    return methods, note


def method_choices(registry: ModelRegistry, model_name: str, method: str | None):
    """Method dropdown update and its note for the chosen model (only methods that can run on it)."""
    methods, note = applicable_methods(registry.card(model_name) if model_name else None)
    return gr.update(choices=methods, value=method if method in methods else "gradcam"), note


def _target(target: str | None):
    return None if target in (None, "", PREDICTED) else target


@user_errors
def explain_image(registry: ModelRegistry, image, model_name: str, method: str, layer: str | None,
                  target: str | None, alpha: float = 0.5, colormap: str = "jet"):
    """-> (face, heatmap, overlay, probabilities, markdown with target, faithfulness and notes,
    deletion/insertion curves figure)."""
    model = registry.get(model_name)
    face, view, found = largest_face(image, int(model.card.get("input_size", 48)))
    if layer and layer not in model.module.explainable_layers:
        layer = None  # a stale dropdown value from another model
    e = explain(model, face, method, layer=layer or None, target=_target(target))
    f = faithfulness(model, face, e)
    text = [f"**{method}** for **{e.target_name}** (model says {EMOTIONS[e.predicted]}, "
            f"{e.probabilities[e.predicted]:.0%})" + (f" at layer `{e.layer}`" if e.layer else "") + ".",
            f"Deletion AUC **{f.deletion_auc:.3f}** (random pixels {f.random_deletion_auc:.3f}; lower is better) · "
            f"insertion AUC **{f.insertion_auc:.3f}** (random {f.random_insertion_auc:.3f}; higher is better): "
            f"{f.verdict}."]
    if e.heatmap.max() == 0:
        text.append("The map is empty: at this layer nothing speaks *for* this class (Grad-CAM keeps positive "
                    "evidence only). Try a shallower layer or another target.")
    if METHOD_NOTES.get(method):
        text.append(f"*{METHOD_NOTES[method]}*")
    if not found:
        text.append("No face was found; the centre square was explained.")
    return (view, colorize(e.heatmap, colormap), e.overlay(view, alpha, colormap),
            probs_dict(e.probabilities), "\n\n".join(text), f.figure(f"{method}, target {e.target_name}"))


@user_errors
def run_sanity_check(registry: ModelRegistry, image, model_name: str, method: str, layer: str | None,
                     target: str | None, progress=gr.Progress()):
    """-> (figure of heatmaps as weights are randomized, verdict)."""
    progress(0, desc="randomizing weights layer by layer")
    model = registry.get(model_name)
    face, _, _ = largest_face(image, int(model.card.get("input_size", 48)))
    if layer and layer not in model.module.explainable_layers:
        layer = None
    result = sanity_check(model, face, method, layer=layer or None, target=_target(target))
    return result.figure(), ("✅ " if result.passed else "⚠️ ") + result.message


def build(registry: ModelRegistry, models: list[str]):
    default = registry.default()
    with gr.Tab("Explain"):
        gr.Markdown("Pick a method, a layer and a target class. Heatmaps are evidence *for the target class* "
                    "according to the method — check them with the faithfulness numbers and the sanity check.")
        with gr.Row():
            image = SafeImage(label="image", elem_id="explain-input")
            with gr.Column():
                model = gr.Dropdown(models, value=default, label="model")
                first = registry.card(default) if default else None  # the card: no weights loaded at start-up
                methods, why = applicable_methods(first)
                method = gr.Dropdown(methods, value="gradcam", label="method")
                method_note = gr.Markdown(why)
                layer = gr.Dropdown(first["explainable_layers"] if first else [],
                                    value=first["default_layer"] if first else None, label="layer")
                target = gr.Dropdown([PREDICTED] + list(EMOTIONS), value=PREDICTED, label="target class")
                alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="overlay opacity")
                colormap = gr.Dropdown(COLORMAP_NAMES, value="jet", label="colormap")
        button = gr.Button("Explain", variant="primary", elem_id="explain-button")
        with gr.Row():
            face = OutputImage(label="face, framed and levelled as the model sees it")
            heat = OutputImage(label="heatmap")
            over = OutputImage(label="overlay", elem_id="explain-overlay")
        with gr.Row():
            bars = gr.Label(num_top_classes=7, label="probabilities")
            notes = gr.Markdown(elem_id="explain-notes")
        curves = gr.Plot(label="deletion / insertion curves")
        sanity = gr.Button("Run the sanity check (randomize the weights)")
        sanity_plot = gr.Plot(label="model-randomization sanity check")
        sanity_text = gr.Markdown()
        model.change(functools.partial(layer_choices, registry), model, layer)
        model.change(functools.partial(method_choices, registry), [model, method], [method, method_note])
        inputs = [image, model, method, layer, target, alpha, colormap]
        button.click(gpu(functools.partial(explain_image, registry)), inputs, [face, heat, over, bars, notes, curves],
                     api_name="explain")
        sanity.click(gpu(functools.partial(run_sanity_check, registry)), inputs[:5], [sanity_plot, sanity_text],
                     api_name="sanity_check", concurrency_limit=1)
