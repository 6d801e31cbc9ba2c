"""Models tab: the model cards, training curves, confusion matrices and region findings."""
from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr

from ..labels import EMOTIONS
from .common import ModelRegistry, card_metric, fmt_pct, user_errors

RESULTS = Path(__file__).resolve().parents[2] / "results"


def overview(registry: ModelRegistry) -> str:
    names = registry.names()
    if not names:
        return registry.missing_message()
    rows = ["| model | architecture | params | MFLOPs | PublicTest | PrivateTest | PrivateTest + flip TTA | "
            "full test | macro-F1 (PrivateTest) | trained |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        card = registry.get(name).card
        t = card.get("training", {})
        rows.append(f"| {name} | {card['architecture']} | {card.get('params', 0) / 1e6:.2f} M | {card.get('mflops', 'n/a')} | "
                    f"{fmt_pct(card_metric(card, 'valid'))} | {fmt_pct(card_metric(card, 'test'))} | "
                    f"{fmt_pct(card_metric(card, 'test_tta'))} | {fmt_pct(card_metric(card, 'test_full'))} | "
                    f"{fmt_pct(card_metric(card, 'test', 'macro_f1'))} | {t.get('epochs_run', '?')} epochs, "
                    f"{t.get('wall_seconds', 0) / 3600:.1f} h on {t.get('hardware', '?')} |")
    return "\n".join(rows)


@user_errors
def model_details(registry: ModelRegistry, name: str):
    """-> (card markdown, curves image path, confusion image path, region markdown)."""
    model = registry.get(name)
    card = model.card
    lines = [f"### {name}", f"- architecture `{card['architecture']}` with config `{card['config']}`",
             f"- input {card.get('input_size')}x{card.get('input_size')}, {card.get('in_channels')} channel(s), "
             f"mean {card.get('mean')}, std {card.get('std')}",
             f"- explainable layers: {', '.join(f'`{x}`' for x in card.get('explainable_layers', []))}; "
             f"Grad-CAM default `{card.get('default_layer')}`; CAM {'yes' if card.get('supports_cam') else 'no'}"]
    if card.get("notes"):
        lines.append(f"- notes: {card['notes']}")
    if card.get("command"):
        lines.append(f"- trained with `{card['command']}` at commit `{card.get('git_commit')}`")
    data = card.get("data", {})
    if data:
        lines.append(f"- data: {data.get('source')} (train fingerprint `{data.get('train_fingerprint')}`)")
    test = card.get("metrics", {}).get("test")
    if test and "per_class" in test:
        lines += ["", "| class | precision | recall | F1 |", "|---|---|---|---|"]
        lines += [f"| {c} | {test['per_class'][c]['precision']:.2f} | {test['per_class'][c]['recall']:.2f} | "
                  f"{test['per_class'][c]['f1']:.2f} |" for c in EMOTIONS]
    folder = RESULTS / name
    curves = folder / "curves.png"
    confusion = folder / "test_confusion.png"
    regions = RESULTS / "regions" / f"{name}.md"
    return ("\n".join(lines), str(curves) if curves.exists() else None,
            str(confusion) if confusion.exists() else None,
            regions.read_text() if regions.exists() else "*No region analysis yet: run benchmarks/region_findings.py.*")


def build(registry: ModelRegistry, models: list[str]):
    with gr.Tab("Models"):
        gr.Markdown(overview(registry), elem_id="models-overview")
        pick = gr.Dropdown(models, value=registry.default(), label="model card")
        card = gr.Markdown()
        with gr.Row():
            curves = gr.Image(label="training curves", type="filepath")
            confusion = gr.Image(label="confusion matrix (PrivateTest)", type="filepath")
        regions = gr.Markdown()
        outputs = [card, curves, confusion, regions]
        pick.change(functools.partial(model_details, registry), pick, outputs)
        return pick, outputs
