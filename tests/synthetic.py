"""Small generated FER-like data for tests: nothing from FER2013 is ever used or committed.

Each class is a 48x48 grayscale "face" (an ellipse) with a class-specific bright mark at a
known place, plus noise, so a tiny model can learn it and explanations have a known answer.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ferlab.labels import EMOTIONS

# top-left corner of each class's 12x12 mark
MARKS = [(4, 4), (4, 32), (18, 4), (18, 32), (32, 4), (32, 32), (18, 18)]


def face(label: int, rng: np.random.Generator, size: int = 48, noise: float = 20.0) -> np.ndarray:
    img = np.full((size, size), 90, np.float32)
    cv2.ellipse(img, (size // 2, size // 2), (size // 3, int(size / 2.3)), 0, 0, 360, 150, -1)
    r, c = MARKS[label]
    s = size / 48
    img[int(r * s):int((r + 12) * s), int(c * s):int((c + 12) * s)] = 245
    img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_arrays(n_per_class: int, seed: int = 0, counts=None):
    rng = np.random.default_rng(seed)
    counts = counts or [n_per_class] * len(EMOTIONS)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    rng.shuffle(labels)
    return np.stack([face(int(y), rng) for y in labels]), labels


def write_parquet_source(root: Path, n_per_class=(12, 4, 4), seed=0, with_votes=True, flip=None) -> Path:
    """train/valid/test.parquet with HF features (image, ClassLabel label, ferplus_votes).

    ``flip``: {split: fraction} of rows whose label is changed to another class; their FER+
    votes keep the true class, as a re-annotation would.  The flipped rows are in
    ``root/flipped_<split>.npy``."""
    flip = flip or {}
    import datasets
    root.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(EMOTIONS)),
                                  "ferplus_votes": datasets.Sequence(datasets.Value("int32"))})
    for i, (split, n) in enumerate(zip(("train", "valid", "test"), n_per_class)):
        images, labels = make_arrays(n, seed + i)
        votes = [_votes_for(int(y)) for y in labels]
        rng = np.random.default_rng(seed + 100 + i)
        flipped = rng.random(len(labels)) < flip.get(split, 0.0)
        labels = np.where(flipped, (labels + rng.integers(1, len(EMOTIONS), len(labels))) % len(EMOTIONS), labels)
        np.save(root / f"flipped_{split}.npy", flipped)
        ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "label": labels.tolist(),
                                         "ferplus_votes": votes}, features=features)
        if not with_votes:
            ds = ds.remove_columns("ferplus_votes")
        ds.to_parquet(str(root / f"{split}.parquet"))
    return root


def _votes_for(label: int) -> list[int]:
    votes = [0] * 10
    votes[[4, 5, 6, 1, 3, 2, 0][label]] = 10  # FER+ column of this FER2013 label
    return votes


def write_tiny_checkpoints(folder: Path, metrics: dict | None = None) -> Path:
    """Two small untrained checkpoints: a cnn (no CAM) and a MobileNetV2 (CAM)."""
    import torch
    from ferlab.checkpoints import base_card, save_checkpoint
    from ferlab.models import create_model
    torch.manual_seed(0)
    for name, arch, cfg in (("tiny_cnn", "cnn", {"widths": [8, 16, 16, 16], "hidden": 16}),
                            ("tiny_mobilenet", "mobilenet_v2", {"width_mult": 0.25})):
        model = create_model(arch, **cfg).eval()
        card = base_card(model, [0.5], [0.5])
        if metrics:
            card["metrics"] = metrics
        save_checkpoint(model, card, folder / name)
    return folder
