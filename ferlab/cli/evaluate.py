"""Evaluate a checkpoint:  ferlab-evaluate --checkpoint ferlab_best --split test [--tta]

Writes <out>/<split>[_tta].json (metrics), a confusion-matrix PNG (counts and row-normalized)
and a classification report; ``--update-card`` stores the metrics in the checkpoint's card.
"""
import argparse
import json
from pathlib import Path

from ferlab.checkpoints import load_model, metrics_key, trained_labels, update_card
from ferlab.data import SPLITS
from ferlab.evaluation import predict_arrays
from ferlab.labels import LABEL_SETS
from ferlab.metrics import classification_metrics, classification_report
from ferlab.plots import confusion_figure
from ferlab.training import load_split


def evaluate(checkpoint: str, split: str, tta: bool, source=None, out=None, update=False,
             labels_kind: str | None = None) -> dict:
    """Score ``checkpoint`` on ``split``; ``labels_kind`` None scores against the labels it was trained on."""
    model = load_model(checkpoint)
    labels_kind = labels_kind or trained_labels(model.card)
    images, labels = load_split(split, source, model.card["input_size"], labels_kind)
    probs = predict_arrays(model.module, images, model.card, model.device, tta=tta, progress=True)
    metrics = classification_metrics(labels, probs)
    key = metrics_key(model.card, split, labels_kind, tta)
    out = Path(out or Path("results") / model.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{key}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / f"{key}_report.txt").write_text(classification_report(metrics))
    confusion_figure(metrics["confusion_matrix"], out / f"{key}_confusion.png",
                     title=f"{model.name} on {split} vs {LABEL_SETS[labels_kind]} labels"
                           f"{' (flip TTA)' if tta else ''}: accuracy {metrics['accuracy']:.2%}")
    if update:
        card_metrics = dict(model.card.get("metrics", {}))
        card_metrics[key] = metrics
        update_card(model.path, metrics=card_metrics)
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="name in checkpoints/ or a checkpoint folder")
    parser.add_argument("--split", action="append", choices=SPLITS,
                        help="split(s) to evaluate (repeatable; default test)")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--data", help="data source (default: FERLAB_DATA, the local copy, or the Hub)")
    parser.add_argument("--out", help="output folder (default results/<checkpoint>)")
    parser.add_argument("--update-card", action="store_true", help="write the metrics into the model card")
    parser.add_argument("--labels", choices=["fer2013", "ferplus"],
                        help="score against the FER2013 labels or the FER+ majority (rows with one); "
                             "default: the labels the checkpoint was trained on")
    args = parser.parse_args(argv)
    for split in args.split or ["test"]:
        m = evaluate(args.checkpoint, split, args.tta, args.data, args.out, args.update_card, args.labels)
        print(f"{args.checkpoint} {split}{' +TTA' if args.tta else ''}: accuracy {m['accuracy']:.4f} "
              f"macro-F1 {m['macro_f1']:.4f} (n={m['n']})")
        print(classification_report(m))


if __name__ == "__main__":
    main()
