"""MTCNN (Zhang et al. 2016), the face detector of the CNN/ViT report ferlab follows: three small
CNNs in a cascade.  P-Net proposes boxes over an image pyramid, R-Net and O-Net refine and score
them, O-Net also places five landmarks (eyes, nose, mouth corners).

The weights ship with ferlab (``assets/mtcnn.safetensors``, 2 MB: facenet-pytorch 2.6.0's, MIT
licence, converted to safetensors), so nothing is downloaded.  The algorithm follows the original
and facenet-pytorch's port; ``tests/test_faces.py`` checks it finds what theirs finds.
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.ops import nms

WEIGHTS = Path(__file__).resolve().parent / "assets" / "mtcnn.safetensors"
THRESHOLDS = (0.6, 0.7, 0.7)   # P-, R-, O-Net face scores
PYRAMID_FACTOR = 0.709         # each pyramid level is this much smaller (half the area)


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)  # the original's (W, H, C) order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


_nets: tuple[PNet, RNet, ONet] | None = None
_nets_lock = threading.Lock()
# one forward at a time per process: the nets are shared (torch modules are not re-entrant-safe
# under hooks, and 2 cores gain nothing from two detections at once)
_run_lock = threading.Lock()


def nets() -> tuple[PNet, RNet, ONet]:
    global _nets
    with _nets_lock:
        if _nets is None:
            state = load_file(str(WEIGHTS))
            loaded = []
            for prefix, cls in (("pnet.", PNet), ("rnet.", RNet), ("onet.", ONet)):
                net = cls()
                net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
                loaded.append(net.eval())
            _nets = tuple(loaded)
        return _nets


def _normalize(patches: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> the nets' input (N, 3, H, W), (x - 127.5) / 128."""
    return (torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125


def _square(boxes: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2], out[:, 3] = out[:, 0] + side, out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, :4] = boxes[:, :4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def _patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box cut from ``image`` (zeros outside it, as the original pads) and resized to ``size``."""
    h, w = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(np.trunc(boxes[:, :4]).astype(int)):
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        if bw <= 0 or bh <= 0:
            continue
        tile = np.zeros((bh, bw, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
        if sx1 > sx0 and sy1 > sy0:
            tile[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA if bw > size else cv2.INTER_LINEAR)
    return out


def _nms(boxes: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0, int)
    if not by_min:
        return nms(torch.from_numpy(boxes[:, :4]).float(), torch.from_numpy(boxes[:, 4]).float(), threshold).numpy()
    order, keep = np.argsort(-boxes[:, 4]), []
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        order = rest[(w * h) / np.minimum(area[i], area[rest]) <= threshold]
    return np.array(keep, int)


@torch.inference_mode()
def detect(rgb: np.ndarray, min_face: float = 20.0, thresholds=THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Faces in an RGB uint8 image: ``(boxes (N, 5): x0, y0, x1, y1, score; landmarks (N, 5, 2): left
    eye, right eye, nose, left and right mouth corner)``, in the image's pixels."""
    return _cascade(rgb, _propose(rgb, min_face, thresholds[0]), thresholds)


def _propose(rgb: np.ndarray, min_face: float, threshold: float) -> np.ndarray:
    """P-Net over the image pyramid: square candidate boxes (N, 5): x0, y0, x1, y1, score."""
    pnet = nets()[0]
    h, w = rgb.shape[:2]
    scale = 12.0 / max(min_face, 12.0)
    candidates = []
    with _run_lock:
        while min(h, w) * scale >= 12:
            level = cv2.resize(rgb, (int(w * scale + 1), int(h * scale + 1)), interpolation=cv2.INTER_AREA)
            reg, prob = pnet(_normalize(level[None]))
            score = prob[0, 1].numpy()
            ys, xs = np.nonzero(score >= threshold)
            if len(ys):
                cells = np.stack([xs, ys], axis=1).astype(np.float32)
                q1, q2 = np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)
                boxes = np.concatenate([q1, q2, score[ys, xs, None], reg[0, :, ys, xs].numpy().T], axis=1)
                candidates.append(boxes[_nms(boxes, 0.5)])
            scale *= PYRAMID_FACTOR
    if not candidates:
        return np.zeros((0, 5), np.float32)
    boxes = np.concatenate(candidates)
    boxes = boxes[_nms(boxes, 0.7)]
    return _square(np.concatenate([_regress(boxes[:, :5], boxes[:, 5:9])[:, :4], boxes[:, 4:5]], axis=1))


def _cascade(rgb: np.ndarray, boxes: np.ndarray, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """R-Net, then O-Net, on square candidate boxes (N, 5): the faces, as ``detect`` returns them."""
    empty = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    if len(boxes) == 0:
        return empty
    with _run_lock:
        reg, prob = nets()[1](_normalize(_patches(rgb, boxes, 24)))
    keep = prob[:, 1].numpy() > thresholds[1]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2].numpy()], axis=1)
    reg = reg[keep].numpy()
    pick = _nms(boxes, 0.7)
    boxes = _square(_regress(boxes[pick], reg[pick]))
    if len(boxes) == 0:
        return empty
    boxes, landmarks = _output(rgb, boxes, thresholds[2])
    pick = _nms(boxes, 0.7, by_min=True)
    return boxes[pick].astype(np.float32), landmarks[pick].astype(np.float32)


def _output(rgb: np.ndarray, boxes: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """O-Net on square ``boxes`` (N, 4+): those scoring above ``threshold``, regressed, with their
    score and five landmarks."""
    _, _, onet = nets()
    with _run_lock:
        reg, points, prob = onet(_normalize(_patches(rgb, boxes, 48)))
    keep = prob[:, 1].numpy() > threshold
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2].numpy()], axis=1)
    points, reg = points[keep].numpy(), reg[keep].numpy()
    bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    landmarks = np.stack([bw[:, None] * points[:, :5] + boxes[:, 0:1] - 1,
                          bh[:, None] * points[:, 5:] + boxes[:, 1:2] - 1], axis=2)
    return _regress(boxes, reg), landmarks


@torch.inference_mode()
def refine(rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces another detector found (``boxes`` (N, 4+): x0, y0, x1, y1), put in MTCNN's terms: each
    box squared and regressed by O-Net, with O-Net's score (not thresholded: the other detector
    decided) and five landmarks, in the same order as ``detect``'s."""
    if len(boxes) == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    out, landmarks = _output(rgb, _square(np.asarray(boxes, np.float64)[:, :4].copy()), -1.0)
    return out.astype(np.float32), landmarks.astype(np.float32)
