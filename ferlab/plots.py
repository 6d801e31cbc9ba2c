"""Figures for training logs and evaluations (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .labels import EMOTIONS  # noqa: E402


def training_curves(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch (train vs valid) from the training log rows."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in rows], label="train")
    ax1.plot(epochs, [r["valid_loss"] for r in rows], label="valid (PublicTest)")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [r["train_acc"] for r in rows], label="train")
    ax2.plot(epochs, [r["valid_acc"] for r in rows], label="valid (PublicTest)")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def confusion_figure(cm, path: str | Path, title: str = "", class_names=EMOTIONS) -> Path:
    """Counts and row-normalized confusion matrices side by side."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, data, fmt, name in ((axes[0], cm, "d", "counts"), (axes[1], norm, ".2f", "row-normalized (recall)")):
        ax.imshow(data, cmap="Blues")
        ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xticklabels=class_names,
               yticklabels=class_names, xlabel="predicted", ylabel="true", title=name)
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
        for i in range(len(class_names)):
            for j in range(len(class_names)):
                ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
