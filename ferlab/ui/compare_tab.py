"""Compare tab: two to four models side by side on the same face."""
from __future__ import annotations

import functools
from itertools import combinations

import gradio as gr
import numpy as np

from ..checkpoints import trained_labels
from ..explain import region_words
from ..labels import EMOTIONS
from ..pipeline import classify_faces
from .common import (ModelRegistry, OutputGallery, SafeImage, card_metric, fmt_pct, gpu,
                     largest_face_location, user_errors)


@user_errors
def compare_models(registry: ModelRegistry, image, model_names: list[str], alpha: float = 0.5):
    """-> (gallery of Grad-CAM overlays captioned with the prediction, markdown table and agreement)."""
    names = list(dict.fromkeys(model_names or []))
    if not 2 <= len(names) <= 4:
        raise gr.Error("Choose two to four models to compare.")
    faces = largest_face_location(image)
    big = faces.view(faces.locations[0], 200)
    rows, items, maps, predictions, notes = [], [], {}, [], []
    for name in names:
        model = registry.get(name)
        result = classify_faces(model, faces, "gradcam")[0]
        e = result.explanation
        if result.note:
            notes.append(f"{name}: {result.note}")
        k = e.predicted
        predictions.append(k)
        maps[name] = e.heatmap
        items.append((e.overlay(big, alpha), f"{name}: {EMOTIONS[k]} {e.probabilities[k]:.0%}"))
        top3 = ", ".join(f"{EMOTIONS[i]} {e.probabilities[i]:.0%}" for i in np.argsort(-e.probabilities)[:3])
        rows.append(f"| {name} | **{EMOTIONS[k]}** | {top3} | {region_words(e.heatmap)} | `{e.layer}` | "
                    f"{fmt_pct(card_metric(model.card, 'test'))} | "
                    f"{fmt_pct(card_metric(model.card, 'test', labels='ferplus'))} |")
    votes = np.bincount(predictions, minlength=len(EMOTIONS))
    top = int(votes.argmax())
    agreement = (f"**All {len(names)} models agree: {EMOTIONS[top]}.**" if votes[top] == len(names) else
                 f"**{votes[top]} of {len(names)} models say {EMOTIONS[top]}**; the others say "
                 + ", ".join(EMOTIONS[p] for p in predictions if p != top) + ".")
    corr = [f"{a} vs {b}: {np.corrcoef(maps[a].ravel(), maps[b].ravel())[0, 1]:.2f}"
            for a, b in combinations(names, 2) if maps[a].std() > 0 and maps[b].std() > 0]
    table = ["| model | prediction | top 3 | looked mostly at | Grad-CAM layer | PrivateTest accuracy | "
             "vs FER+ majority |", "|---|---|---|---|---|---|---|", *rows]
    text = "\n".join(table) + "\n\n" + agreement
    if corr:
        text += "\n\nHeatmap agreement (Pearson correlation of the Grad-CAM maps): " + "; ".join(corr) + "."
    if notes:
        text += "\n\n" + "\n\n".join(notes)
    if not faces.found:
        text += "\n\nNo face was found; the centre square was used."
    text += ("\n\n*Accuracies come from each model's card: FER2013 PrivateTest against its FER2013 labels, and "
             "against the FER+ majority labels (the re-annotation), whichever labels the model was trained on.*")
    return items, text


def most_different(registry: ModelRegistry, models: list[str], count: int = 3) -> list[str]:
    """The default model, then one model of each other architecture trained on the same labels: the
    comparison the tab opens on (not three copies of one network)."""
    default = registry.default()
    chosen = [default] if default in models else []
    seen = {registry.card(default)["architecture"]} if chosen else set()
    labels = trained_labels(registry.card(default)) if chosen else None
    for name in models:
        card = registry.card(name)
        arch = card["architecture"]
        if arch not in seen and len(chosen) < count and trained_labels(card) == (labels or trained_labels(card)):
            chosen.append(name)
            seen.add(arch)
    return chosen + [m for m in models if m not in chosen][:max(0, min(2, len(models)) - len(chosen))]


def build(registry: ModelRegistry, models: list[str]):
    with gr.Tab("Compare"):
        with gr.Row():
            image = SafeImage(label="image", elem_id="compare-input")
            with gr.Column():
                chosen = gr.CheckboxGroup(models, value=most_different(registry, models), label="models (2-4)")
                alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="overlay opacity")
                button = gr.Button("Compare", variant="primary", elem_id="compare-button")
        gallery = OutputGallery(label="Grad-CAM at each model's default layer", columns=4, height="auto",
                                object_fit="contain", elem_id="compare-gallery")
        table = gr.Markdown(elem_id="compare-table")
        button.click(gpu(functools.partial(compare_models, registry)), [image, chosen, alpha], [gallery, table],
                     api_name="compare")
