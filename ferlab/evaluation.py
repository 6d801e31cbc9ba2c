"""Batched inference over decoded arrays, shared by training, evaluation, benchmarks and the audit."""
from __future__ import annotations

import numpy as np
import torch

from .models.base import model_lock
from .preprocess import normalize


@torch.inference_mode()
def predict_arrays(module: torch.nn.Module, images: np.ndarray, card: dict, device=None,
                   batch_size: int = 512, tta: bool = False, progress: bool = False, on_batch=None) -> np.ndarray:
    """Softmax probabilities ``(N, C)`` for uint8 ``(N, H, W)`` images already at the model's size.

    ``tta`` averages the probabilities of each image and its horizontal mirror.  ``on_batch(done)``
    is called after each batch with the number of images done (a UI's progress bar).
    """
    device = device or next(module.parameters()).device
    with model_lock(module):
        return _predict(module, images, card, device, batch_size, tta, progress, on_batch)


def _predict(module, images, card, device, batch_size, tta, progress, on_batch=None):
    was_training = module.training
    module.eval()
    out = []
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="predict", unit="batch", leave=False)
    for start in starts:
        x = normalize(torch.from_numpy(images[start:start + batch_size]).unsqueeze(1), card).to(device)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        probs = torch.softmax(module(x).float(), dim=1)
        if tta:
            probs = (probs + torch.softmax(module(x.flip(-1)).float(), dim=1)) / 2
        out.append(probs.cpu())
        if on_batch is not None:
            on_batch(min(start + batch_size, len(images)))
    module.train(was_training)
    return torch.cat(out).numpy() if out else np.empty((0, 7), np.float32)


def ensemble_accuracy(probabilities: dict[str, np.ndarray], names, labels: np.ndarray) -> float:
    """Accuracy (0-1) of the mean probabilities of the models ``names``."""
    return float((np.mean([probabilities[n] for n in names], axis=0).argmax(1) == labels).mean())


def select_ensemble(probabilities: dict[str, np.ndarray], labels: np.ndarray, min_size: int = 2) -> tuple[str, ...]:
    """The subset of models whose mean probabilities score best on ``labels`` (ties: fewer models,
    then name order).  Call it with PublicTest predictions only, then report the subset on PrivateTest."""
    from itertools import combinations
    names = sorted(probabilities)
    best, best_acc = (), -1.0
    for size in range(min_size, len(names) + 1):
        for subset in combinations(names, size):
            acc = ensemble_accuracy(probabilities, subset, labels)
            if acc > best_acc:
                best, best_acc = subset, acc
    return best
