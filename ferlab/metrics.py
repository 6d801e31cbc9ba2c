"""Classification metrics, computed from a confusion matrix (rows: true, columns: predicted)."""
from __future__ import annotations

import numpy as np

from .labels import EMOTIONS, NUM_CLASSES


def confusion_matrix(labels, predictions, num_classes: int = NUM_CLASSES) -> np.ndarray:
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def classification_metrics(labels, probabilities_or_predictions, class_names=EMOTIONS) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages, confusion matrix."""
    p = np.asarray(probabilities_or_predictions)
    predictions = p.argmax(axis=1) if p.ndim == 2 else p
    cm = confusion_matrix(labels, predictions, len(class_names))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum()
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(class_names)}
    weights = support / total if total else np.zeros_like(support)
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "weighted_f1": float((f1 * weights).sum()),
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "n": int(total),
    }


def classification_report(metrics: dict) -> str:
    """The familiar text table (like scikit-learn's) from :func:`classification_metrics`."""
    lines = [f"{'':>12} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:>12} {m['precision']:9.4f} {m['recall']:9.4f} {m['f1']:9.4f} {m['support']:9d}")
    n = metrics["n"]
    lines += ["", f"{'accuracy':>12} {'':>9} {'':>9} {metrics['accuracy']:9.4f} {n:9d}",
              f"{'macro avg':>12} {metrics['macro_precision']:9.4f} {metrics['macro_recall']:9.4f} "
              f"{metrics['macro_f1']:9.4f} {n:9d}",
              f"{'weighted avg':>12} {metrics['weighted_precision']:9.4f} {metrics['weighted_recall']:9.4f} "
              f"{metrics['weighted_f1']:9.4f} {n:9d}"]
    return "\n".join(lines) + "\n"
