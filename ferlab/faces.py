"""Faces in a photo: detection, eye leveling, and crops framed the way FER2013 frames faces.

Default detector: MTCNN (``ferlab.mtcnn``, weights shipped with ferlab), which also places the
eyes, with MediaPipe's BlazeFace (``ferlab.blazeface``, weights shipped too) as a second opinion
on the upright picture: the faces only BlazeFace finds join MTCNN's, boxed and landmarked by
MTCNN's O-Net so that every face is framed the same way.  ``kind="haar"``: OpenCV's frontal-face
Haar cascade from ``cv2.data`` (faster, misses more), with its eye cascade.  ``kind="yunet"``:
OpenCV's YuNet, when ``FERLAB_FACE_MODEL`` names its ``.onnx`` file (nothing is downloaded).
Each runs at a resolution chosen per image, so that faces down to ``min_face`` pixels (24 by
default) stay findable while the pixel count stays bounded (``MAX_DETECT_PIXELS``); small images
(a tight selfie, a 48x48 FER crop) are upscaled and padded, so that a face filling the picture is
still found.  The picture is searched upright and turned by
``DETECT_ANGLES``, so tilted heads are found too.  Frames are RGB uint8 arrays throughout.

Framing: ``FRAMINGS`` says where each detector's box sits in FER2013's 48x48 frame, measured by
``benchmarks/face_framing.py`` on Training images (``results/face_framing.md``).  ``frame_transform``
cuts that frame around a detected face, turned so that the eyes are level when both are found.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from .preprocess import HIGH_DEPTH_MODES, InputError, _array_to_gray, flatten_alpha, open_image, upright

# Haar's cascade window is 24x24: the smallest face it can see at the resolution it runs at.
CASCADE_WINDOW = 24
# Detection runs on at most this many pixels (about 1280x780): a 12 MP photo is searched at 0.29x,
# so its faces down to ~84 px are found in ~0.3 s on one core.
MAX_DETECT_PIXELS = 1_000_000
# Images whose short side is below this are upscaled to it (and padded) before detection.
MIN_DETECT_SIDE = 240
# Faces whose eyes tilt more than this are left as detected (the eye pair is then unreliable).  The
# turned passes below find heads tilted up to about 40 degrees, with landmarks placed upright.
MAX_EYE_ANGLE = 40.0
# The picture is searched upright and turned by these angles (degrees): frontal detectors miss heads
# tilted past ~15 degrees, common in photos (a head on a shoulder, a hand on a cheek).  Measured on
# PublicTest scenes by benchmarks/photo_pipeline.py (docs/experiments/face_recall.md).
DETECT_ANGLES = (0.0, -20.0, 20.0)
# Boxes of two passes whose overlap (IoU) exceeds this are one face: the higher score is kept.
SAME_FACE_IOU = 0.3
# A face the turned passes find must score at least this (the upright pass keeps MTCNN's own 0.7):
# three searches give chance patterns three chances.
TURNED_MIN_SCORE = 0.85
# BlazeFace (ferlab.blazeface) searches the upright picture beside MTCNN and adds the faces MTCNN
# missed, boxed and landmarked by MTCNN's O-Net.  Such a face must score this with BlazeFace
# (MediaPipe's own 0.5 fires on textured backgrounds) and at least BLAZEFACE_ONET_MIN with O-Net.
# Chosen on PublicTest scenes (face_recall.md).
BLAZEFACE_MIN_SCORE = 0.7
BLAZEFACE_ONET_MIN = 0.2


@dataclass(frozen=True)
class Framing:
    """Where FER2013 puts a detector's face box inside its square frame, in frame units."""

    box_side: float   # detector box side / frame side
    center_dx: float  # (box centre - frame centre) / frame side, horizontal
    center_dy: float  # the same, vertical (positive: the box sits below the frame's centre)


# Measured by benchmarks/face_framing.py (median over Training images where the detector finds the
# face; results/face_framing.json).  tests/test_pipeline.py checks that the two agree.
FRAMINGS = {
    "mtcnn": Framing(box_side=1.042, center_dx=-0.01, center_dy=0.0),
    "haar": Framing(box_side=0.979, center_dx=0.0, center_dy=0.0),
}
FRAMINGS["yunet"] = FRAMINGS["mtcnn"]  # not measured here (no weights): its boxes resemble MTCNN's
# Where FER2013 puts MTCNN's five landmarks (left eye, right eye, nose, left and right mouth corner),
# in frame units (median over the same Training images).  Faces with landmarks are cut by the
# similarity transform that maps these onto them: steadier than the box, and it levels the eyes.
FER_LANDMARKS = ((0.325, 0.4), (0.699, 0.392), (0.513, 0.608), (0.36, 0.796), (0.67, 0.791))
DETECTORS = ("mtcnn", "haar", "yunet")


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    landmarks: tuple | None = field(default=None, compare=False)  # ((x, y) x 5) from MTCNN: eyes, nose, mouth

    @classmethod
    def from_corners(cls, x0: float, y0: float, x1: float, y1: float) -> "Box":
        """The box from its corners (a detector's x0, y0, x1, y1), rounded to pixels; no score."""
        return cls(round(x0), round(y0), round(x1 - x0), round(y1 - y0))

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def iou(self, other: "Box") -> float:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.x + self.w, other.x + other.w), min(self.y + self.h, other.y + other.h)
        inter = max(0, x1 - x0) * max(0, y1 - y0)
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union > 0 else 0.0


def _inside(small: Box, big: Box) -> float:
    """The share of ``small``'s area that lies inside ``big``."""
    w = max(0, min(small.x + small.w, big.x + big.w) - max(small.x, big.x))
    h = max(0, min(small.y + small.h, big.y + big.h) - max(small.y, big.y))
    return w * h / max(small.w * small.h, 1)


def _turned(picture: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray | None]:
    """``picture`` turned by ``angle`` degrees (counter-clockwise on screen) on a canvas that holds all
    of it, and the 2x3 map from the turned canvas back to ``picture`` (None when not turned)."""
    if not angle:
        return picture, None
    h, w = picture.shape[:2]
    t = math.radians(angle)
    cw = int(math.ceil(w * abs(math.cos(t)) + h * abs(math.sin(t))))
    ch = int(math.ceil(w * abs(math.sin(t)) + h * abs(math.cos(t))))
    forward = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    forward[:, 2] += ((cw - w) / 2, (ch - h) / 2)
    turned = cv2.warpAffine(picture, forward, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return turned, cv2.invertAffineTransform(forward)


def _cascade(name: str) -> cv2.CascadeClassifier:
    det = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, name))
    if det.empty():
        raise RuntimeError(f"OpenCV's {name} is missing from cv2.data; reinstall opencv-python-headless 4.x")
    return det


def detection_scale(width: int, height: int, min_face: int = CASCADE_WINDOW,
                    max_pixels: int = MAX_DETECT_PIXELS) -> float:
    """The factor the image is resized by before detection: a ``min_face`` face becomes the
    cascade's window, small images reach ``MIN_DETECT_SIDE``, the pixel count stays bounded."""
    scale = CASCADE_WINDOW / max(min_face, 1)
    scale = max(scale, MIN_DETECT_SIDE / max(min(width, height), 1))
    return min(scale, math.sqrt(max_pixels / max(width * height, 1)), 8.0)


class FaceDetector:
    """Thread-safe (each thread gets its own OpenCV detector: they are not shareable)."""

    def __init__(self, kind: str | None = None, min_face: int = CASCADE_WINDOW, max_pixels: int = MAX_DETECT_PIXELS,
                 min_neighbors: int = 5, model_path: str | None = None, angles: tuple[float, ...] = DETECT_ANGLES,
                 thresholds: tuple[float, float, float] | None = None, turned_min_score: float = TURNED_MIN_SCORE,
                 blazeface_min_score: float | None = BLAZEFACE_MIN_SCORE, blazeface_onet_min: float = BLAZEFACE_ONET_MIN,
                 upright_first: bool = True):
        self.model_path = model_path if model_path is not None else os.environ.get("FERLAB_FACE_MODEL") or None
        self.angles = tuple(float(a) for a in angles) or (0.0,)
        self.thresholds = thresholds  # MTCNN's three stage thresholds (None: ferlab.mtcnn.THRESHOLDS)
        self.turned_min_score = float(turned_min_score)
        # MTCNN only: the second opinion (None: MTCNN alone) and its floors, see BLAZEFACE_MIN_SCORE
        self.blazeface_min_score = blazeface_min_score
        self.blazeface_onet_min = float(blazeface_onet_min)
        self.upright_first = upright_first  # a face the upright pass finds keeps the upright pass's box
        self.kind = kind or ("yunet" if self.model_path else "mtcnn")
        if self.kind not in DETECTORS:
            raise InputError(f"unknown face detector {self.kind!r}; choose one of {', '.join(DETECTORS)}")
        self.min_face, self.max_pixels, self.min_neighbors = int(min_face), int(max_pixels), int(min_neighbors)
        self.framing = FRAMINGS[self.kind]
        self._local = threading.local()
        if self.kind == "yunet" and not (self.model_path and os.path.isfile(self.model_path)):
            raise InputError(f"the YuNet detector needs FERLAB_FACE_MODEL to name its .onnx file "
                             f"(got {self.model_path!r}); use kind='mtcnn' or 'haar' instead")

    def _detector(self):
        det = getattr(self._local, "detector", None)
        if det is None:
            if self.kind == "yunet":
                det = cv2.FaceDetectorYN.create(self.model_path, "", (320, 320), 0.8, 0.3, 50)
            else:
                det = _cascade("haarcascade_frontalface_default.xml")
            self._local.detector = det
        return det

    def _eyes(self) -> cv2.CascadeClassifier:
        det = getattr(self._local, "eyes", None)
        if det is None:
            det = self._local.eyes = _cascade("haarcascade_eye.xml")
        return det

    def detect(self, image: np.ndarray, min_face: int | None = None,
               angles: tuple[float, ...] | None = None) -> list[Box]:
        """Faces in an RGB (or gray) uint8 frame, largest first, in the frame's pixels.  ``angles``:
        the turns the picture is searched at (default: the detector's; ``(0,)`` searches it once)."""
        frame = np.asarray(image)
        h, w = frame.shape[:2]
        min_face = min_face or self.min_face
        scale = detection_scale(w, h, min_face, self.max_pixels)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = frame if scale == 1 else cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                    interpolation=interp)
        # A face that fills a small picture needs room around it to be seen: pad small images.
        pad = round(0.25 * min(small.shape[:2])) if min(h, w) * scale <= 1.5 * MIN_DETECT_SIDE else 0
        if pad:
            small = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = []  # (x, y, w, h, score, landmarks, upright pass?) in the detection image's pixels, every pass
        for angle in (self.angles if angles is None else angles):
            turned, back = _turned(small, angle)
            for x, y, bw, bh, s, pts in self._search(turned, min_face * scale, upright=back is None):
                if back is not None:
                    if self.kind != "haar" and s < self.turned_min_score:
                        continue  # (Haar's scores are cascade weights, not probabilities)
                    cx, cy = back @ (x + bw / 2, y + bh / 2, 1.0)  # the box keeps its size, centre turned back
                    x, y = cx - bw / 2, cy - bh / 2
                    pts = None if pts is None else np.c_[np.asarray(pts, np.float64), np.ones(5)] @ back.T
                found.append((x, y, bw, bh, s, pts, back is None))
        # one box per face across the passes: the upright pass's if it found the face (its crops score
        # better, face_recall.md), else the best-scored
        unique, kept = [], []
        order = (lambda f: (not f[6], -f[4])) if self.upright_first else (lambda f: -f[4])
        for f in sorted(found, key=order):
            box = Box(round(f[0]), round(f[1]), round(f[2]), round(f[3]))
            if all(box.iou(k) <= SAME_FACE_IOU for k in kept):
                unique.append(f)
                kept.append(box)
        boxes: list[Box] = []
        for x, y, bw, bh, s, pts, _ in sorted(unique, key=lambda f: f[2] * f[3], reverse=True):
            marks = None if pts is None else tuple((float((px - pad) / scale), float((py - pad) / scale))
                                                   for px, py in pts)
            box = Box(round((x - pad) / scale), round((y - pad) / scale), round(bw / scale), round(bh / scale), s, marks)
            # a face holds no smaller face: a box mostly inside a larger one is an eye or a mouth
            if box.w > 0 and box.h > 0 and not any(_inside(box, big) > 0.5 for big in boxes):
                boxes.append(box)
        return boxes

    def _search(self, picture: np.ndarray, min_face: float, upright: bool = True) -> list[tuple]:
        """One detector pass: ``(x, y, w, h, score, landmarks or None)`` in ``picture``'s pixels."""
        if self.kind == "mtcnn":
            from . import mtcnn
            rgb = picture if picture.ndim == 3 else cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB)
            boxes, points = mtcnn.detect(rgb, max(12.0, min_face), self.thresholds or mtcnn.THRESHOLDS)
            if upright and self.blazeface_min_score is not None:
                boxes, points = self._with_blazeface(rgb, min_face, boxes, points)
            return [(x0, y0, x1 - x0, y1 - y0, float(s), pts) for (x0, y0, x1, y1, s), pts in zip(boxes, points)]
        if self.kind == "yunet":
            bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR) if picture.ndim == 3 else \
                cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
            det = self._detector()
            det.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = det.detect(bgr)
            return [] if faces is None else [(f[0], f[1], f[2], f[3], float(f[-1]), f[4:14].reshape(5, 2))
                                             for f in faces]
        rects, _, weights = self._detector().detectMultiScale3(
            _array_to_gray(picture), scaleFactor=1.1, minNeighbors=self.min_neighbors,
            minSize=(max(CASCADE_WINDOW, round(min_face)),) * 2, outputRejectLevels=True)
        return [(x, y, bw, bh, float(s), None) for (x, y, bw, bh), s in zip(rects, np.ravel(weights))] \
            if len(rects) else []

    def _with_blazeface(self, rgb, min_face, boxes, points):
        """MTCNN's faces plus those only BlazeFace finds, put in MTCNN's terms (box and landmarks
        from O-Net, BlazeFace's score)."""
        from . import blazeface, mtcnn
        extra, _ = blazeface.detect(rgb, max(8.0, min_face), self.blazeface_min_score)
        seen = [Box.from_corners(*b[:4]) for b in boxes]
        new = [b for b in extra if all(Box.from_corners(*b[:4]).iou(k) <= SAME_FACE_IOU for k in seen)]
        if not new:
            return boxes, points
        new = np.asarray(new)
        refined, marks = mtcnn.refine(rgb, new)
        keep = refined[:, 4] >= self.blazeface_onet_min
        refined, marks = refined[keep], marks[keep]
        refined[:, 4] = new[keep, 4]
        return np.concatenate([boxes.reshape(-1, 5), refined]), np.concatenate([points.reshape(-1, 5, 2), marks])

    def eyes(self, gray: np.ndarray, box: Box) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """Centres of the (image-)left and right eye in image pixels, or None unless a plausible pair
        is found: the detector's landmarks when it gives them, else the eye cascade (one eye per half
        of the face, not too far from level)."""
        if box.landmarks is not None:
            left, right = box.landmarks[0], box.landmarks[1]
            if right[0] > left[0] and abs(eye_angle((left, right))) <= MAX_EYE_ANGLE:
                return left, right
            return None
        if box.w < 40:  # too small for the eye cascade to mean anything
            return None
        x0, y0 = max(box.x, 0), max(box.y, 0)
        roi = gray[y0:box.y + int(box.h * 0.6), x0:box.x + box.w]
        if roi.size == 0:
            return None
        k = 120 / box.w  # eyes are searched on the face at a fixed size
        roi = cv2.equalizeHist(cv2.resize(roi, (max(1, round(roi.shape[1] * k)), max(1, round(roi.shape[0] * k))),
                                          interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR))
        found = self._eyes().detectMultiScale(roi, scaleFactor=1.1, minNeighbors=4, minSize=(14, 14), maxSize=(50, 50))
        if len(found) < 2:
            return None
        centres = [((ex + ew / 2) / k + x0, (ey + eh / 2) / k + y0, ew * eh) for ex, ey, ew, eh in found]
        mid = box.x + box.w / 2
        left = [c for c in centres if c[0] < mid]
        right = [c for c in centres if c[0] >= mid]
        if not left or not right:
            return None
        (lx, ly, _), (rx, ry, _) = max(left, key=lambda c: c[2]), max(right, key=lambda c: c[2])
        distance = math.hypot(rx - lx, ry - ly)
        if not 0.25 * box.w <= distance <= 0.75 * box.w:
            return None
        if abs(eye_angle(((lx, ly), (rx, ry)))) > MAX_EYE_ANGLE:
            return None
        return (lx, ly), (rx, ry)


_default: FaceDetector | None = None
_default_lock = threading.Lock()


def default_detector() -> FaceDetector:
    global _default
    with _default_lock:
        if _default is None:
            _default = FaceDetector()
        return _default


def center_box(width: int, height: int) -> Box:
    side = min(width, height)
    return Box((width - side) // 2, (height - side) // 2, side, side, 0.0)


def eye_angle(eyes) -> float:
    """Degrees the line from the left to the right eye dips below horizontal (image y points down)."""
    (lx, ly), (rx, ry) = eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


def frame_transform(box: Box, size: int, angle: float = 0.0, framing: Framing | None = None) -> np.ndarray:
    """The 2x3 affine map from crop pixel indices (``size`` x ``size``) to image pixel indices: FER2013's frame
    around ``box`` as ``framing`` places it (None: the box itself), turned by ``angle`` degrees."""
    cx, cy = box.center
    if framing is None:
        side, dx, dy = float(max(box.w, box.h)), 0.0, 0.0
    else:
        side = max(box.w, box.h) / framing.box_side
        dx, dy = framing.center_dx * side, framing.center_dy * side
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    fx, fy = cx - (cos * dx - sin * dy), cy - (sin * dx + cos * dy)  # the frame's centre
    a = side / size
    off = 0.5 - size / 2  # crop pixel centres, relative to the crop's centre
    # pixel indices on both sides: a pixel's centre is at index + 0.5 in continuous coordinates
    return np.array([[a * cos, -a * sin, fx - 0.5 + a * (cos * off - sin * off)],
                     [a * sin, a * cos, fy - 0.5 + a * (sin * off + cos * off)]], np.float64)


def landmark_transform(landmarks, size: int, template=FER_LANDMARKS) -> np.ndarray:
    """The 2x3 map from crop pixel indices to image pixel indices that puts the face's five landmarks
    where FER2013 has them (least-squares similarity: turn, uniform scale, shift)."""
    src = np.asarray(template, np.float64) * size - 0.5  # frame units -> crop pixel indices
    dst = np.asarray(landmarks, np.float64)
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None:  # degenerate landmarks (all on a point)
        m, _ = cv2.estimateAffinePartial2D(src, dst, method=0)
    return m


def crop_corners(to_image: np.ndarray, size: int) -> np.ndarray:
    """The four corners of a ``size`` x ``size`` crop in picture pixels, in drawing order: (4, 2) float."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [size, size, 1], [0, size, 1]], np.float64).T
    return (to_image @ corners).T


def picture_region(to_image: np.ndarray, size: int, width: int, height: int, margin: int = 0) -> tuple[int, ...]:
    """``(x0, y0, x1, y1)``: the part of a ``width`` x ``height`` picture that the crop covers (plus
    ``margin`` pixels), clipped to the picture and never empty."""
    c = crop_corners(to_image, size)
    x0 = max(0, min(int(np.floor(c[:, 0].min())) - margin, width - 1))
    y0 = max(0, min(int(np.floor(c[:, 1].min())) - margin, height - 1))
    x1 = max(x0 + 1, min(int(np.ceil(c[:, 0].max())) + 1 + margin, width))
    y1 = max(y0 + 1, min(int(np.ceil(c[:, 1].max())) + 1 + margin, height))
    return x0, y0, x1, y1


def warp_crop(gray: np.ndarray, to_image: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop whose pixels ``to_image`` maps into ``gray``; area-averaged when
    the frame is larger than the crop, edge pixels repeated where it leaves the image."""
    h, w = gray.shape[:2]
    scale = math.hypot(to_image[0, 0], to_image[1, 0])  # image pixels per crop pixel
    x0, y0, x1, y1 = picture_region(to_image, size, w, h, margin=2)
    roi = gray[y0:y1, x0:x1]
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    m = shift @ np.vstack([to_image, [0, 0, 1]])
    if scale > 1.5:  # shrink the region first: bilinear sampling alone would alias
        k = 1.0 / scale
        roi = cv2.resize(roi, (max(1, round(roi.shape[1] * k)), max(1, round(roi.shape[0] * k))),
                         interpolation=cv2.INTER_AREA)
        sx, sy = roi.shape[1] / (x1 - x0), roi.shape[0] / (y1 - y0)
        m = np.diag([sx, sy, 1.0]) @ m
    return cv2.warpAffine(roi, m[:2], (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def to_rgb_frame(image) -> np.ndarray:
    """Any user image -> RGB uint8 ``(H, W, 3)`` at full resolution, for detection and drawing.
    Transparency is composited on white; high-depth and grayscale images become gray RGB."""
    if isinstance(image, (bytes, bytearray, str, os.PathLike)):
        image = open_image(image if not isinstance(image, os.PathLike) else str(image))
    if isinstance(image, Image.Image):
        image = upright(image)
        if image.mode == "RGB":
            return np.asarray(image)
        if image.mode in HIGH_DEPTH_MODES + ("L", "1"):
            return cv2.cvtColor(_array_to_gray(np.asarray(image)), cv2.COLOR_GRAY2RGB)
        return np.asarray(flatten_alpha(image))
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 3 and a.dtype == np.uint8:
        return a
    if a.ndim == 3 and a.shape[-1] == 4 and a.dtype == np.uint8:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        return (a[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return cv2.cvtColor(_array_to_gray(a), cv2.COLOR_GRAY2RGB)
