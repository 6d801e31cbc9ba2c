"""Models tab: the model cards, training curves, confusion matrices and region findings."""
from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr

from ..cards import card_markdown
from ..checkpoints import trained_labels
from ..labels import LABEL_SETS
from .common import ModelRegistry, card_metric, fmt_pct, user_errors

RESULTS = Path(__file__).resolve().parents[2] / "results"


def overview(registry: ModelRegistry) -> str:
    cards = registry.cards()
    if not cards:
        return registry.missing_message()
    rows = ["| model | architecture | trained on | params | MFLOPs | PublicTest | PrivateTest | PrivateTest + flip TTA | "
            "full test | macro-F1 (PrivateTest) | PrivateTest vs FER+ majority | trained |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, card in cards.items():
        t = card.get("training", {})
        rows.append(f"| {name} | {card['architecture']} | {LABEL_SETS[trained_labels(card)]} | "
                    f"{card.get('params', 0) / 1e6:.2f} M | {card.get('mflops', 'n/a')} | "
                    f"{fmt_pct(card_metric(card, 'valid'))} | {fmt_pct(card_metric(card, 'test'))} | "
                    f"{fmt_pct(card_metric(card, 'test', tta=True))} | {fmt_pct(card_metric(card, 'test_full'))} | "
                    f"{fmt_pct(card_metric(card, 'test', 'macro_f1'))} | "
                    f"{fmt_pct(card_metric(card, 'test', labels='ferplus'))} | {t.get('epochs_run', '?')} epochs, "
                    f"{t.get('wall_seconds', 0) / 3600:.1f} h on {t.get('hardware', '?')} |")
    rows += ["", "Accuracies are against the FER2013 labels unless the column says FER+ majority (the FER+ "
             "re-annotation's most-voted emotion, on the images that have a unique one), so models trained on "
             "either label set compare."]
    return "\n".join(rows)


@user_errors
def model_details(registry: ModelRegistry, name: str):
    """-> (card markdown, curves image path, confusion image path, region markdown)."""
    text = card_markdown(registry.card(name), name)
    folder = RESULTS / name
    curves = folder / "curves.png"
    confusion = folder / "test_confusion.png"
    regions = RESULTS / "regions" / f"{name}.md"
    return (text, str(curves) if curves.exists() else None,
            str(confusion) if confusion.exists() else None,
            regions.read_text() if regions.exists() else "*No region analysis yet: run `python -m benchmarks.region_findings`.*")


def build(registry: ModelRegistry, models: list[str]):
    with gr.Tab("Models"):
        gr.Markdown(overview(registry), elem_id="models-overview")
        default = registry.default()
        # the default model's card is filled in at build time: images given a value only after the
        # page loads rendered 0 px high until another model was picked
        first = model_details(registry, default) if default else ("", None, None, "")
        pick = gr.Dropdown(models, value=default, label="model card")
        card = gr.Markdown(first[0])
        with gr.Row():
            curves = gr.Image(first[1], label="training curves", type="filepath", height=360)
            confusion = gr.Image(first[2], label="confusion matrix (PrivateTest)", type="filepath", height=360)
        regions = gr.Markdown(first[3])
        pick.change(functools.partial(model_details, registry), pick, [card, curves, confusion, regions])
