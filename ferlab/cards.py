"""Model cards as people read them: the Models tab's summary and the Hugging Face-style
``README.md`` beside each checkpoint's weights (YAML metadata, then intended use, limits,
training data and evaluation).  The card itself is ``card.json`` (``ferlab.checkpoints``)."""
from __future__ import annotations

from pathlib import Path

import yaml

from .checkpoints import read_card, trained_labels
from .data import DEFAULT_HUB_ID
from .labels import EMOTIONS, LABEL_SETS

LICENSE = "mit"  # the repository's LICENSE; FER2013's own terms are named in each card's limits

INTENDED_USE = (
    "Teaching and exploring what facial-expression classifiers attend to: classify a face, look at "
    "its Grad-CAM or other attributions, compare architectures, audit the dataset's labels.")
LIMITS = [
    "FER2013 is web-scraped, posed and noisy: about a third of PrivateTest labels are overruled by the FER+ "
    "re-annotation, so accuracy against FER2013 labels is capped well below 100%.",
    "A predicted expression is not an emotion: faces are not evidence of anyone's inner state. Do not use "
    "these models for decisions about people (hiring, policing, grading, health, security).",
    "Trained on 48x48 grayscale faces, mostly frontal, unevenly spread over ages and skin tones; photos far "
    "from that (profile views, occlusions, children, low light) are classified less reliably.",
    "A heatmap shows which pixels moved this model's score for one class at one layer; it is not a "
    "reason a person would give, and an empty map means the layer found no evidence, not that none exists.",
    "FER2013's images come from the ICML 2013 Kaggle challenge and carry its terms; check them before any "
    "use beyond research and teaching.",
]


def training_summary(card: dict) -> str:
    """"60 epochs, 2.7 h on <hardware>", counting the checkpoint a fine-tune started from."""
    t = card.get("training", {})
    if not t:
        return "not recorded"
    hours = (t.get("wall_seconds") or 0) / 3600
    if "soup_of" in t:   # ferlab.soup: the chosen runs' weights averaged
        runs = {i["name"]: i for i in t["soup_of"]}
        parts = [f"{n} ({runs[n].get('epochs_run', '?')} epochs after {runs[n].get('initialized_from')})"
                 if runs[n].get("initialized_from") else f"{n} ({runs[n].get('epochs_run', '?')} epochs)"
                 for n in t["chosen"]]
        return f"weight average (greedy soup) of {' + '.join(parts)}, {hours:.1f} h on {t.get('hardware', '?')}"
    text = f"{t.get('epochs_run', '?')} epochs"
    start = t.get("initialized_from")
    if start:
        text += f" after {start.get('name')}'s {start.get('epochs_run', '?')}"
        hours += (start.get("wall_seconds") or 0) / 3600
    return f"{text}, {hours:.1f} h on {t.get('hardware', '?')}"


def card_markdown(card: dict, name: str | None = None, intended_use: bool = True) -> str:
    """A human-readable model card (for checkpoints/<name>/README.md and the app's Models tab)."""
    name = name or card.get("name") or card["architecture"]
    t, data = card.get("training", {}), card.get("data", {})
    lines = [f"### {name}", "",
             f"- architecture `{card['architecture']}`, config `{card['config']}`, "
             f"{card.get('params', 0) / 1e6:.2f} M parameters, {card.get('mflops', 'n/a')} MFLOPs per 48x48 image",
             f"- input {card.get('input_size')}x{card.get('input_size')}, {card.get('in_channels')} channel(s), "
             f"normalization mean {card.get('mean')} std {card.get('std')}; classes {', '.join(card.get('class_names', EMOTIONS))}",
             f"- explainable layers: {', '.join(f'`{x}`' for x in card.get('explainable_layers', []))}; Grad-CAM default "
             f"`{card.get('default_layer')}`; CAM {'yes' if card.get('supports_cam') else 'no'}"]
    if data:
        lines.append(f"- data: `{data.get('source')}`, labels {trained_labels(card)}, {data.get('train_size')} "
                     f"training images (fingerprint `{data.get('train_fingerprint')}`), selected on PublicTest")
    if t:
        best = f" (best epoch {t['best_epoch']})" if t.get("best_epoch") is not None else ""
        lines.append(f"- training: {training_summary(card)}{best}, torch {t.get('torch')}")
    if t.get("soup_of"):
        lines.append("- soup ingredients (PublicTest alone; epochs and training time of each run): " + "; ".join(
            f"{i['name']} {100 * i['valid_accuracy']:.2f}%, {i.get('epochs_run', '?')} epochs in "
            f"{(i.get('wall_seconds') or 0) / 60:.0f} min" for i in t["soup_of"]) + f"; averaged: {', '.join(t['chosen'])}")
    if card.get("command"):
        lines.append(f"- command: `{card['command']}` at commit `{card.get('git_commit')}`")
    if card.get("notes"):
        lines.append(f"- notes: {card['notes']}")
    metrics = card.get("metrics", {})
    rows = [(k, v) for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v]
    if rows:
        lines += ["", "| split | accuracy | macro-F1 | n |", "|---|---|---|---|"]
        lines += [f"| {k} | {100 * v['accuracy']:.2f}% | {v.get('macro_f1', float('nan')):.3f} | {v.get('n', '')} |"
                  for k, v in rows]
    test = metrics.get("test")
    if test and "per_class" in test:
        lines += ["", "PrivateTest per class:", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} | {m['support']} |"
                  for c, m in test["per_class"].items()]
    if intended_use:
        lines += ["", "Intended use: teaching and exploring what FER models attend to. FER2013 is noisy, posed and "
                  "web-scraped; its predictions are not evidence of anyone's emotional state."]
    return "\n".join(lines) + "\n"


def hub_metadata(card: dict, name: str) -> dict:
    """The YAML block of a Hugging Face model card: library, tags, datasets, licence and the
    evaluation results as a ``model-index`` (PrivateTest against each label set scored)."""
    labels = trained_labels(card)
    results = []
    for key, label_set in (("test", labels), ("test_tta", labels),
                           ("test_ferplus" if labels == "fer2013" else "test_fer2013",
                            "ferplus" if labels == "fer2013" else "fer2013")):
        m = card.get("metrics", {}).get(key)
        if not m:
            continue
        results.append({
            "task": {"type": "image-classification", "name": "Facial expression recognition"},
            "dataset": {"type": DEFAULT_HUB_ID, "name": f"FER2013 PrivateTest, {LABEL_SETS[label_set]} labels",
                        "split": "test"},
            "metrics": [{"type": "accuracy", "value": round(100 * m["accuracy"], 2),
                         "name": f"accuracy{' (flip TTA)' if key.endswith('_tta') else ''}"},
                        {"type": "f1", "value": round(m["macro_f1"], 3), "name": "macro-F1"}]})
    return {"library_name": "pytorch", "license": LICENSE, "pipeline_tag": "image-classification",
            "tags": ["ferlab", "facial-expression-recognition", "fer2013", "grad-cam", "safetensors",
                     card["architecture"]],
            "datasets": [DEFAULT_HUB_ID], "metrics": ["accuracy", "f1"],
            "model-index": [{"name": name, "results": results}]}


def model_card_readme(card: dict, name: str) -> str:
    """``checkpoints/<name>/README.md``: Hugging Face model-card metadata, then the sections."""
    meta = yaml.safe_dump(hub_metadata(card, name), sort_keys=False, allow_unicode=True)
    labels = trained_labels(card)
    data = card.get("data", {})
    summary = card_markdown(card, name, intended_use=False).split("\n", 2)[2]  # without its "### name" title
    lines = ["---", meta.rstrip("\n"), "---", "", f"# {name}", "",
             f"A `{card['architecture']}` facial-expression classifier from "
             f"ferlab: 48x48 grayscale face in, probabilities of "
             f"{', '.join(card.get('class_names', EMOTIONS))} out. Load it with "
             f"`ferlab.load_model(\"{name}\")` or run it on a photo with `ferlab.analyze(photo, \"{name}\")`.", "",
             "## Intended use", "", INTENDED_USE, "",
             "## Limits", "", *[f"- {x}" for x in LIMITS], "",
             "## Training data", "",
             f"FER2013 Training ({data.get('train_size', 28709)} images), {LABEL_SETS[labels]} labels; "
             f"{'the runs averaged were' if card.get('training', {}).get('soup_of') else 'the epoch was'} "
             "selected on PublicTest and PrivateTest read once, after selection.", "",
             "## Training procedure and evaluation", "", summary]
    return "\n".join(lines)


def write_model_card(folder: str | Path, name: str | None = None) -> Path:
    """Write ``README.md`` beside a checkpoint from its ``card.json``."""
    folder = Path(folder)
    path = folder / "README.md"
    path.write_text(model_card_readme(read_card(folder), name or folder.name))
    return path
