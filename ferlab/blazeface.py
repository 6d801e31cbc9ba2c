"""BlazeFace (Bazarevsky et al. 2019), MediaPipe's short-range face detector: a small single-shot
network with six keypoints (eyes, nose tip, mouth centre, ears) that finds many faces MTCNN misses
(of PublicTest faces alone in their frame, 94.8% are found with it beside MTCNN, 91.7% without;
docs/experiments/face_recall.md).

The weights ship with ferlab (``assets/blazeface.safetensors``, 0.4 MB: MediaPipe 0.10.14's
``face_detection_short_range.tflite``, Apache-2.0, converted by
``docs/experiments/face_recall/convert_blazeface.py``), so nothing is downloaded.  MediaPipe runs the
network on one 128x128 picture; it is fully convolutional, so here it runs on a whole image at each
level of a pyramid (faces of ``FACE_RANGE`` network pixels are what it finds), and the anchors are
laid out over the image's own grid.  ``tests/test_blazeface.py`` checks the port against the tflite's
outputs, kept as a fixture.
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torchvision.ops import nms

WEIGHTS = Path(__file__).resolve().parent / "assets" / "blazeface.safetensors"
THRESHOLD = 0.5          # MediaPipe's own minimum score for this model
NMS_IOU = 0.3            # MediaPipe's suppression overlap
# Face boxes the network finds, in its input's pixels: at 128x128 input it finds FER2013 frames of
# 25-75% of the picture (docs/experiments/face_recall.md); each pyramid level covers this range.
FACE_RANGE = (32.0, 96.0)
# The pyramid's first level holds at most this many pixels (None: no cap): on a large picture the
# smallest faces are then left to MTCNN, which finds small faces at a fraction of the cost.
MAX_PIXELS = None
# (stride, anchors per cell) of the two heads
HEADS = ((8, 2), (16, 6))
CHANNELS = (24, 24, 28, 32, 36, 42, 48, 56, 64, 72, 80, 88, 96, 96, 96, 96, 96)
STRIDE_TWO = {3, 6, 12}  # blocks (1-based, as CHANNELS[i] -> CHANNELS[i+1]) that halve the grid


class Block(nn.Module):
    """Depthwise 3x3 then pointwise conv, added to the input (max-pooled and zero-padded in channels
    where the block halves the grid or widens), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, cout - cin
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, 0 if stride == 2 else 1, groups=cin)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        if self.stride == 2:
            h = F.pad(x, (0, 1, 0, 1))   # TensorFlow's SAME padding for an even input
            x = F.max_pool2d(x, 2)
        else:
            h = x
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return F.relu(self.pointwise(self.depthwise(h)) + x)


class BlazeFace(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 5, 2)
        self.blocks = nn.ModuleList(Block(CHANNELS[i], CHANNELS[i + 1], 2 if i + 1 in STRIDE_TWO else 1)
                                    for i in range(len(CHANNELS) - 1))
        self.classify8, self.classify16 = nn.Conv2d(88, 2, 1), nn.Conv2d(96, 6, 1)
        self.regress8, self.regress16 = nn.Conv2d(88, 32, 1), nn.Conv2d(96, 96, 1)

    def forward(self, x):
        """(N, 3, H, W) in [-1, 1], H and W multiples of 16 -> (scores logits (N, A), raw boxes (N, A, 16))."""
        x = F.relu(self.stem(F.pad(x, (1, 2, 1, 2))))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 10:
                grid8 = x
        n = x.shape[0]

        def flat(t, k):
            return t.permute(0, 2, 3, 1).reshape(n, -1, k)
        logits = torch.cat([flat(self.classify8(grid8), 1), flat(self.classify16(x), 1)], 1)[..., 0]
        raw = torch.cat([flat(self.regress8(grid8), 16), flat(self.regress16(x), 16)], 1)
        return logits, raw


def anchors(height: int, width: int) -> np.ndarray:
    """Anchor centres (A, 2) in input pixels, in the network's output order."""
    out = []
    for stride, per in HEADS:
        ys, xs = np.mgrid[0:height // stride, 0:width // stride]
        centres = (np.stack([xs, ys], -1).reshape(-1, 2) + 0.5) * stride
        out.append(np.repeat(centres, per, axis=0))
    return np.concatenate(out).astype(np.float32)


_net: BlazeFace | None = None
_net_lock = threading.Lock()
_run_lock = threading.Lock()  # one forward at a time per process, as for MTCNN


def net() -> BlazeFace:
    global _net
    with _net_lock:
        if _net is None:
            model = BlazeFace()
            model.load_state_dict(load_file(str(WEIGHTS)))
            # channels-last: depthwise convolutions run about twice as fast on CPU
            _net = model.eval().to(memory_format=torch.channels_last)
        return _net


def to_input(pictures: np.ndarray) -> torch.Tensor:
    """RGB uint8 (N, H, W, 3) -> the network's input (N, 3, H, W) in [-1, 1], channels-last."""
    x = torch.from_numpy(np.ascontiguousarray(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.contiguous(memory_format=torch.channels_last)


def _decode(logits: torch.Tensor, raw: torch.Tensor, height: int, width: int, threshold: float):
    score = torch.sigmoid(logits.clamp(-100, 100)).numpy()
    keep = np.nonzero(score >= threshold)[0]
    a = anchors(height, width)[keep]
    r = raw.numpy()[keep]
    centre, size = a + r[:, 0:2], r[:, 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2, score[keep, None]], 1)
    points = a[:, None, :] + r[:, 4:16].reshape(-1, 6, 2)
    return boxes, points


@torch.inference_mode()
def detect(rgb: np.ndarray, min_face: float = 24.0, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Faces in an RGB uint8 image: ``(boxes (N, 5): x0, y0, x1, y1, score; keypoints (N, 6, 2):
    right eye, left eye (the person's: image-left first, then image-right), nose tip, mouth centre,
    right and left ear)``, in the image's pixels.  Faces from ``min_face`` pixels up to the
    image's short side are searched."""
    model = net()
    h, w = rgb.shape[:2]
    scale = FACE_RANGE[0] / max(min_face, 1.0)
    if MAX_PIXELS:
        scale = min(scale, (MAX_PIXELS / (h * w)) ** 0.5)
    found_boxes, found_points = [], []
    with _run_lock:
        while True:
            lh, lw = max(16, round(h * scale / 16) * 16), max(16, round(w * scale / 16) * 16)
            level = cv2.resize(rgb, (lw, lh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            boxes, points = _decode(*(t[0] for t in model(to_input(level[None]))), lh, lw, threshold)
            sx, sy = w / lw, h / lh
            boxes[:, [0, 2]] *= sx
            boxes[:, [1, 3]] *= sy
            points[..., 0] *= sx
            points[..., 1] *= sy
            found_boxes.append(boxes)
            found_points.append(points)
            # the next level halves the picture: faces up to FACE_RANGE[1] px at this level are covered,
            # and a face never exceeds the picture's short side
            if min(lh, lw) <= FACE_RANGE[1] * 1.5:
                break
            scale /= 2
    boxes, points = np.concatenate(found_boxes), np.concatenate(found_points)
    if len(boxes) == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0, 6, 2), np.float32)
    keep = nms(torch.from_numpy(boxes[:, :4]), torch.from_numpy(boxes[:, 4]), NMS_IOU).numpy()
    return boxes[keep].astype(np.float32), points[keep].astype(np.float32)
