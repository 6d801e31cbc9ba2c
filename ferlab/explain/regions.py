"""Fixed face regions of the aligned 48x48 FER2013 crop, and Grad-CAM mass per region.

FER2013 faces are roughly registered: on the mean training face the eyes sit on rows 15-21
(columns ~13-18 and ~31-36), the nose tip near row 27 and the mouth near rows 34-40.  The
regions below are boxes on that 48x48 grid (scaled for other input sizes):

* ``forehead``      rows 0-9,   cols 8-39
* ``brows_eyes``    rows 10-21, cols 6-41
* ``nose``          rows 22-30, cols 17-30
* ``mouth``         rows 31-41, cols 13-34   (lips, the upper lip included)
* ``cheeks_jaw``    rows 22-47, cols 6-41, minus nose and mouth
* ``outside``       everything else (background, hair, ears, image borders)

They are coarse on purpose: FER2013 alignment is loose, so region shares are statements about
averages over many images, not about any single face.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..labels import EMOTIONS

BOXES = {  # name: (row0, row1, col0, col1), end-exclusive, on the 48x48 grid
    "forehead": (0, 10, 8, 40),
    "brows_eyes": (10, 22, 6, 42),
    "nose": (22, 31, 17, 31),
    "mouth": (31, 42, 13, 35),
    "cheeks_jaw": (22, 48, 6, 42),
}
REGIONS = ("forehead", "brows_eyes", "nose", "mouth", "cheeks_jaw", "outside")
REGION_WORDS = {"forehead": "the forehead", "brows_eyes": "the eyes and brows", "nose": "the nose",
                "mouth": "the mouth", "cheeks_jaw": "the cheeks and jaw", "outside": "outside the face"}

# What the literature says the models look at (VGG19 and residual-SE reports), as region sets.
LITERATURE_CLAIMS = {
    "happy": (("mouth", "cheeks_jaw"), "mouth and cheeks"),
    "fear": (("brows_eyes",), "eyes and eyebrows"),
    "disgust": (("nose", "mouth"), "nose and upper lip"),
    "angry": (("brows_eyes", "forehead"), "eyebrows and forehead"),
    "sad": (("brows_eyes", "mouth"), "eyes and eyebrows, sometimes the mouth"),
}


def region_masks(size: int = 48) -> dict[str, np.ndarray]:
    """Boolean ``(size, size)`` masks, one per region; they partition the image."""
    scale = size / 48
    masks = {}
    for name, (r0, r1, c0, c1) in BOXES.items():
        m = np.zeros((size, size), bool)
        m[round(r0 * scale):round(r1 * scale), round(c0 * scale):round(c1 * scale)] = True
        masks[name] = m
    masks["cheeks_jaw"] &= ~(masks["nose"] | masks["mouth"])
    masks["brows_eyes"] &= ~masks["forehead"]
    taken = np.zeros((size, size), bool)
    for name in REGIONS[:-1]:
        masks[name] &= ~taken
        taken |= masks[name]
    masks["outside"] = ~taken
    return {name: masks[name] for name in REGIONS}


def region_shares(heatmap: np.ndarray) -> dict[str, float]:
    """Share of the heatmap's mass in each region (sums to 1; all zeros for an empty map)."""
    heat = np.clip(np.asarray(heatmap, np.float32), 0, None)
    total = float(heat.sum())
    masks = region_masks(heat.shape[0])
    return {name: (float(heat[m].sum()) / total if total > 0 else 0.0) for name, m in masks.items()}


def area_shares(size: int = 48) -> dict[str, float]:
    return {name: float(m.mean()) for name, m in region_masks(size).items()}


def region_words(heatmap: np.ndarray, top: int = 1) -> str:
    """Plain words for where a heatmap is most concentrated relative to region size."""
    shares, areas = region_shares(heatmap), area_shares(np.asarray(heatmap).shape[0])
    if sum(shares.values()) == 0:
        return "nowhere in particular"
    ranked = sorted(REGIONS, key=lambda r: shares[r] / max(areas[r], 1e-6), reverse=True)[:top]
    return " and ".join(REGION_WORDS[r] for r in ranked)


@dataclass
class RegionAttribution:
    model: str
    split: str
    layer: str
    class_means: np.ndarray                 # (7, H, W), each class's mean mass map (sums to 1)
    shares: np.ndarray                      # (7, len(REGIONS))
    counts: np.ndarray                      # images per class
    accuracy: float
    areas: dict = field(default_factory=area_shares)

    def claims(self) -> list[dict]:
        """Each literature claim checked: does the class put more mass on the claimed regions
        than the other classes do on average, and more than their share of the image area?"""
        rows = []
        for emotion, (regions, words) in LITERATURE_CLAIMS.items():
            c = EMOTIONS.index(emotion)
            idx = [REGIONS.index(r) for r in regions]
            share = float(self.shares[c, idx].sum())
            others = float(np.mean([self.shares[o, idx].sum() for o in range(len(EMOTIONS)) if o != c]))
            area = float(sum(self.areas[r] for r in regions))
            rows.append({"emotion": emotion, "claim": words, "regions": regions, "share": share,
                         "other_classes": others, "area": area, "holds": share > others and share > area})
        return rows

    def markdown(self) -> str:
        head = "| true class | n | " + " | ".join(REGIONS) + " |"
        lines = [head, "|" + "---|" * (len(REGIONS) + 2)]
        for c, name in enumerate(EMOTIONS):
            lines.append(f"| {name} | {int(self.counts[c])} | " +
                         " | ".join(f"{100 * s:.1f}%" for s in self.shares[c]) + " |")
        lines.append("| *area of region* | | " + " | ".join(f"*{100 * self.areas[r]:.1f}%*" for r in REGIONS) + " |")
        lines += ["", "| literature claim | claimed regions | share for the class | mean share, other classes "
                      "| area | holds? |", "|---|---|---|---|---|---|"]
        for r in self.claims():
            lines.append(f"| {r['emotion']}: {r['claim']} | {' + '.join(r['regions'])} | {100 * r['share']:.1f}% | "
                         f"{100 * r['other_classes']:.1f}% | {100 * r['area']:.1f}% | "
                         f"{'yes' if r['holds'] else '**no**'} |")
        return "\n".join(lines) + "\n"

    def figure(self, path):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(EMOTIONS) + 1, figsize=(2.2 * (len(EMOTIONS) + 1), 2.8))
        size = self.class_means.shape[-1]
        boxes = draw_regions(np.full((size, size, 3), 255, np.uint8), scale=1)
        axes[0].imshow(boxes)
        axes[0].set_title("regions", fontsize=9)
        for name, (r0, r1, c0, c1) in BOXES.items():
            row = r0 + 1.5 if name != "cheeks_jaw" else r1 - 2.5
            axes[0].text(c0 + 1, row, name, fontsize=6, va="top", color=np.array(_REGION_COLORS[name]) / 255)
        for c, ax in enumerate(axes[1:]):
            m = self.class_means[c]
            ax.imshow(m / m.max() if m.max() > 0 else m, cmap="jet", vmin=0, vmax=1)
            ax.imshow(draw_regions(np.zeros((size, size, 3), np.uint8), scale=1, only_lines=True), alpha=0.35)
            ax.set_title(f"{EMOTIONS[c]} (n={int(self.counts[c])})", fontsize=9)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{self.model}: mean Grad-CAM ({self.layer}) per true class on {self.split}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


_REGION_COLORS = {"forehead": (230, 159, 0), "brows_eyes": (86, 180, 233), "nose": (0, 158, 115),
                  "mouth": (213, 94, 0), "cheeks_jaw": (204, 121, 167)}


def draw_regions(rgb: np.ndarray, scale: float = 1, only_lines: bool = False) -> np.ndarray:
    """Draw the region boxes on an RGB image of side 48*scale (for figures and the app)."""
    out = rgb.copy()
    s = out.shape[0] / 48
    for name, (r0, r1, c0, c1) in BOXES.items():
        color = (255, 255, 255) if only_lines else _REGION_COLORS[name]
        cv2.rectangle(out, (int(c0 * s), int(r0 * s)), (int(c1 * s) - 1, int(r1 * s) - 1), color, 1)
    return out


def region_attribution(model, split: str = "test", source=None, layer: str | None = None, batch_size: int = 256,
                       max_images: int | None = None, images=None, labels=None) -> RegionAttribution:
    """Mean Grad-CAM (target = true class) per true class over a split, and its mass per region."""
    from ..data import load_fer2013, to_arrays
    from .core import explain

    size = int(model.card.get("input_size", 48))
    if images is None:
        images, labels = to_arrays(load_fer2013(split, source), size)
    if max_images:
        images, labels = images[:max_images], labels[:max_images]
    sums = np.zeros((len(EMOTIONS), size, size), np.float64)
    counts = np.bincount(labels, minlength=len(EMOTIONS))
    correct = 0
    layer_name = layer or model.module.default_layer
    for start in range(0, len(images), batch_size):
        batch, y = images[start:start + batch_size], labels[start:start + batch_size]
        for e, label in zip(explain(model, list(batch), "gradcam", layer=layer_name, target=y.tolist()), y):
            total = e.heatmap.sum()
            if total > 0:
                sums[label] += e.heatmap / total
            correct += int(e.predicted == label)
    means = sums / np.maximum(counts, 1)[:, None, None]
    shares = np.array([[region_shares(m)[r] for r in REGIONS] for m in means])
    return RegionAttribution(model=model.name, split=split, layer=layer_name, class_means=means.astype(np.float32),
                             shares=shares, counts=counts, accuracy=correct / max(len(labels), 1))
