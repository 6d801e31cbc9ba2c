"""Is a heatmap trustworthy?  Two checks beyond what the usual demos show.

* ``faithfulness``: deletion and insertion curves (Petsiuk et al., RISE, 2018).  Remove the most
  relevant pixels first (to black) and watch the target probability fall; or start from a
  blurred face and restore the most relevant pixels first and watch it rise.  A faithful map
  gives a low deletion AUC and a high insertion AUC, compared with random pixel orders.
* ``sanity_check``: cascading model-parameter randomization (Adebayo et al., 2018).  Re-initialize
  the weights from the top layer down and compare each heatmap with the trained model's (Spearman
  rank correlation).  A method whose map survives the destruction of the weights is showing the
  image, not the model.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..models.base import model_lock
from ..preprocess import normalize, to_gray_uint8
from .core import Explanation, explain


@dataclass
class Faithfulness:
    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float

    @property
    def verdict(self) -> str:
        better_del = self.deletion_auc < self.random_deletion_auc
        better_ins = self.insertion_auc > self.random_insertion_auc
        if better_del and better_ins:
            return "faithful: removing the highlighted pixels hurts, restoring them helps, more than random pixels"
        if better_del or better_ins:
            return "partly faithful: better than random pixels on one of deletion / insertion only"
        return "not faithful here: random pixels matter as much as the highlighted ones"

    def figure(self, title: str = ""):
        fig = Figure(figsize=(5.5, 3.2))  # not pyplot: nothing keeps the figure alive after use
        ax = fig.subplots()
        ax.plot(self.fractions, self.deletion, "-", color="#d62728",
                label=f"deletion, most relevant first (AUC {self.deletion_auc:.2f})")
        ax.plot(self.fractions, self.insertion, "-", color="#2ca02c",
                label=f"insertion, most relevant first (AUC {self.insertion_auc:.2f})")
        ax.axhline(self.deletion[0], color="gray", lw=0.8, ls=":")
        ax.set(xlabel="fraction of pixels removed / restored", ylabel="target probability", ylim=(0, 1.02),
               title=title or "faithfulness")
        ax.text(0.99, 0.02, f"random orders: deletion {self.random_deletion_auc:.2f}, insertion "
                f"{self.random_insertion_auc:.2f}", transform=ax.transAxes, ha="right", fontsize=7, color="gray")
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig


def _target_probs(model, gray_batch: np.ndarray, target: int) -> np.ndarray:
    x = normalize(torch.from_numpy(gray_batch).unsqueeze(1), model.card).to(model.device)
    with model_lock(model.module), torch.no_grad():
        return torch.softmax(model.module(x).float(), dim=1)[:, target].cpu().numpy()


def _curves(gray: np.ndarray, blurred: np.ndarray, order: np.ndarray, fractions: np.ndarray):
    flat, blur = gray.reshape(-1), blurred.reshape(-1)
    deleted, inserted = [], []
    for f in fractions:
        idx = order[:int(round(f * flat.size))]
        d = flat.copy()
        d[idx] = 0
        i = blur.copy()
        i[idx] = flat[idx]
        deleted.append(d)
        inserted.append(i)
    shape = (len(fractions),) + gray.shape
    return np.stack(deleted).reshape(shape), np.stack(inserted).reshape(shape)


def faithfulness(model, image, explanation: Explanation, steps: int = 24, random_orders: int = 3,
                 seed: int = 0) -> Faithfulness:
    """Deletion / insertion curves and AUCs of ``explanation`` for ``model`` on ``image``."""
    size = int(model.card.get("input_size", 48))
    gray = explanation.image if explanation.image.shape == (size, size) else to_gray_uint8(image, size)
    blurred = cv2.GaussianBlur(gray, (0, 0), sigmaX=size / 10)
    fractions = np.linspace(0, 1, steps + 1)
    heat = cv2.resize(explanation.heatmap, (size, size)) if explanation.heatmap.shape != (size, size) \
        else explanation.heatmap
    rng = np.random.default_rng(seed)
    # ties (e.g. all-zero areas) are ordered randomly, not by pixel index
    orders = [np.lexsort((rng.random(heat.size), -heat.reshape(-1)))]
    orders += [rng.permutation(heat.size) for _ in range(random_orders)]
    batches = [np.concatenate(_curves(gray, blurred, o, fractions)) for o in orders]
    probs = _target_probs(model, np.concatenate(batches), explanation.target).reshape(len(orders), 2, -1)
    auc = lambda c: float(np.trapezoid(c, fractions))  # noqa: E731
    return Faithfulness(fractions=fractions, deletion=probs[0, 0], insertion=probs[0, 1],
                        deletion_auc=auc(probs[0, 0]), insertion_auc=auc(probs[0, 1]),
                        random_deletion_auc=float(np.mean([auc(p[0]) for p in probs[1:]])),
                        random_insertion_auc=float(np.mean([auc(p[1]) for p in probs[1:]])))


# --------------------------------------------------------------------------- sanity check

@dataclass
class SanityCheck:
    method: str
    layer: str | None
    steps: list[str]                       # "trained", then each randomized block, top down
    correlations: list[float]              # Spearman rank correlation with the trained heatmap
    heatmaps: list[np.ndarray] = field(repr=False)
    threshold: float = 0.5

    @property
    def informative(self) -> bool:
        """False when the trained model's map is empty: nothing to compare against."""
        return bool(np.ptp(self.heatmaps[0]) > 0)

    @property
    def passed(self) -> bool:
        return self.informative and self.correlations[-1] < self.threshold

    @property
    def message(self) -> str:
        final = self.correlations[-1]
        if not self.informative:
            return (f"{self.method} found no positive evidence at {self.layer} for this image (an empty map), so the "
                    f"randomization check has nothing to compare; try another layer or target.")
        if self.passed:
            return (f"{self.method} passes the randomization check: with every weight re-initialized its map's rank "
                    f"correlation with the trained model's falls to {final:.2f}, so it depends on what the model learned.")
        return (f"WARNING: {self.method} fails the randomization check: with every weight re-initialized its map still "
                f"has rank correlation {final:.2f} with the trained model's. This heatmap shows the image more than "
                f"the model; do not read it as the model's reasoning.")

    def figure(self):
        n = len(self.steps)
        fig = Figure(figsize=(max(6, 1.6 * n), 5.2))  # not pyplot: nothing keeps the figure alive after use
        axes = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1.2, 1]})
        strip = np.concatenate([np.pad(h, 2, constant_values=1) for h in self.heatmaps], axis=1)
        axes[0].imshow(strip, cmap="jet", vmin=0, vmax=1)
        axes[0].set_xticks([(i + 0.5) * (self.heatmaps[0].shape[1] + 4) for i in range(n)])
        axes[0].set_xticklabels([s.split(".")[-1] if s != "trained" else s for s in self.steps], fontsize=7,
                                rotation=30)
        axes[0].set_yticks([])
        axes[0].set_title(f"{self.method}: heatmap as weights are randomized from the top layer down")
        axes[1].plot(range(n), self.correlations, "o-")
        axes[1].axhline(self.threshold, color="gray", ls="--", lw=1)
        axes[1].set(ylim=(-0.2, 1.05), xticks=range(n), ylabel="Spearman vs trained",
                    xlabel="randomized down to")
        axes[1].set_xticklabels([s.split(".")[-1] if s != "trained" else s for s in self.steps], fontsize=7,
                                rotation=30)
        axes[1].grid(alpha=0.3)
        fig.tight_layout()
        return fig


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0  # a constant map carries no ranking, so nothing of the original survives
    return float(spearmanr(a, b).statistic)


def randomization_blocks(module) -> list[tuple[str, list[nn.Module]]]:
    """Parametrized leaf modules grouped by explainable layer, top (head) first."""
    layers = list(module.explainable_layers)
    blocks: dict[str, list[nn.Module]] = {name: [] for name in ["head"] + layers[::-1]}
    pending: list[nn.Module] = []
    for name, m in module.named_modules():
        owner = next((layer for layer in layers if name == layer or name.startswith(layer + ".")), None)
        if owner is not None and name == owner:
            blocks[owner].extend(pending)  # modules just before a layer (e.g. VGG's conv before its ReLU)
            pending = []
        has_params = any(True for _ in m.parameters(recurse=False))
        if not has_params:
            continue
        if owner is not None:
            blocks[owner].append(m)
        else:
            pending.append(m)
    blocks["head"].extend(pending)
    return [(k, v) for k, v in blocks.items() if v]


def sanity_check(model, image, method: str = "gradcam", layer: str | None = None, target=None,
                 threshold: float = 0.5, seed: int = 0, **options) -> SanityCheck:
    """Cascading randomization of a private copy of ``model`` (the shared model is untouched)."""
    trained = explain(model, image, method, layer=layer, target=target, **options)
    with model_lock(model.module):
        clone = copy.deepcopy(model.module)
    randomized = dataclasses.replace(model, module=clone)
    torch.manual_seed(seed)
    steps, corrs, maps = ["trained"], [1.0], [trained.heatmap]
    for name, modules in randomization_blocks(clone):
        for m in modules:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
        e = explain(randomized, image, method, layer=trained.layer, target=trained.target, **options)
        steps.append(name)
        corrs.append(spearman(trained.heatmap, e.heatmap))
        maps.append(e.heatmap)
    return SanityCheck(method=method, layer=trained.layer, steps=steps, correlations=corrs, heatmaps=maps,
                       threshold=threshold)
