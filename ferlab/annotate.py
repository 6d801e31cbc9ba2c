"""Verdicts drawn on the photo: each face's frame, a label that stays legible and on the picture,
and the evidence map laid over exactly the pixels the model saw.

The heatmap's opacity follows its strength (``overlay_heatmap``): where a method finds no
evidence the face looks as it is, so an empty map never reads as a blanket tint.
"""
from __future__ import annotations

import cv2
import numpy as np

from .explain.core import color_heatmap
from .faces import crop_corners, picture_region
from .pipeline import Faces, classify_faces

FRAME_COLOR = (0, 200, 120)
FALLBACK_COLOR = (230, 160, 0)


def blend_evidence(frame: np.ndarray, heatmap: np.ndarray, to_image: np.ndarray, alpha: float,
                   colormap: str = "jet") -> None:
    """Lay a crop-space [0, 1] heatmap over ``frame`` (RGB uint8, in place) where the crop came from;
    each pixel's opacity is ``alpha`` times the map's value there."""
    h, w = frame.shape[:2]
    size = heatmap.shape[0]
    x0, y0, x1, y1 = picture_region(to_image, size, w, h)
    m = np.vstack([to_image, [0, 0, 1]])
    m = (np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ m)[:2]
    heat = cv2.warpAffine(np.clip(heatmap, 0, 1).astype(np.float32), m, (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if heat.max() <= 0:  # no evidence, or the crop lies off the picture
        return
    colored = color_heatmap(heat, x1 - x0, y1 - y0, colormap).astype(np.float32)
    weight = float(np.clip(alpha, 0, 1)) * heat[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.uint8(np.clip(region * (1 - weight) + colored * weight, 0, 255))


def frame_polygon(to_image: np.ndarray, size: int) -> np.ndarray:
    """The crop's four corners in picture pixels (int32, for ``cv2.polylines``)."""
    return np.round(crop_corners(to_image, size)).astype(np.int32)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_faces(frame: np.ndarray, faces: list, labels: list[str], alpha: float = 0.45, show_evidence: bool = True,
               colormap: str = "jet") -> np.ndarray:
    """A copy of ``frame`` (RGB uint8) with every face's evidence, frame and label."""
    out = frame.copy()
    h, w = out.shape[:2]
    if show_evidence:
        for face in faces:
            if face.heatmap is not None:
                blend_evidence(out, face.heatmap, face.to_image, alpha, colormap)
    thick = max(1, round(max(h, w) / 500))
    scale = float(np.clip(max(h, w) / 1300, 0.4, 1.6))
    placed: list[tuple[int, int, int, int]] = []
    for face, text in zip(faces, labels):
        color = FRAME_COLOR if face.detected else FALLBACK_COLOR
        poly = frame_polygon(face.to_image, face.crop.shape[0])
        cv2.polylines(out, [poly], True, color, thick, cv2.LINE_AA)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        bw, bh = tw + 6, th + base + 6
        left = int(np.clip(poly[:, 0].min(), 0, max(0, w - bw)))
        top, bottom = int(poly[:, 1].min()), int(poly[:, 1].max())
        # above the frame, else below it, else inside its top; never off the picture or on another label
        spots = [top - bh, bottom, max(top, 0)]
        for y in spots + [int(y) for y in np.arange(0, max(1, h - bh), max(1, bh // 2))]:
            y = int(np.clip(y, 0, max(0, h - bh)))
            rect = (left, y, left + bw, y + bh)
            if not any(_overlaps(rect, r) for r in placed):
                break
        placed.append(rect)
        cv2.rectangle(out, rect[:2], (rect[2] - 1, rect[3] - 1), color, -1)
        cv2.putText(out, text, (left + 3, y + 3 + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


def face_label(face, index: int, count: int) -> str:
    """The words drawn beside a face: its emotion and confidence, numbered when there are several."""
    text = f"{face.emotion} {face.confidence:.0%}" if face.detected else f"no face found: centre {face.emotion}"
    return f"{index + 1}: {text}" if count > 1 else text


def annotate_faces(model, frame: np.ndarray, located: Faces, show_evidence: bool = True, alpha: float = 0.45,
                   tracker=None, t: float = 0.0):
    """Located faces classified (with Grad-CAM when ``show_evidence``), followed by ``tracker`` (a
    ``ferlab.tracking.FaceTracker``) at time ``t`` when given, and drawn -> (annotated frame, face results)."""
    faces = classify_faces(model, located, "gradcam" if show_evidence else None)
    if tracker is not None:
        tracker.update(faces, t)
    labels = [face_label(f, i, len(faces)) for i, f in enumerate(faces)]
    return draw_faces(frame, faces, labels, alpha, show_evidence=show_evidence), faces
