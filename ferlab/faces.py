"""Face detection and cropping with OpenCV.

Default detector: the frontal-face Haar cascade that ships in ``cv2.data``.  Optional: OpenCV's
YuNet DNN detector when ``FERLAB_FACE_MODEL`` names its ``.onnx`` file (more robust to pose and
light; nothing is downloaded).  Frames are RGB uint8 arrays throughout.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from PIL import Image

from .preprocess import HIGH_DEPTH_MODES, InputError, _array_to_gray, flatten_alpha, open_image, upright


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    def square(self, margin: float, width: int, height: int) -> "Box":
        """A square around the face, grown by ``margin`` (FER crops include brows and chin)."""
        side = int(round(max(self.w, self.h) * (1 + margin)))
        side = max(1, min(side, width, height))
        cx, cy = self.x + self.w / 2, self.y + self.h / 2
        x = int(round(min(max(cx - side / 2, 0), width - side)))
        y = int(round(min(max(cy - side / 2, 0), height - side)))
        return Box(x, y, side, side, self.score)


class FaceDetector:
    """Thread-safe wrapper: OpenCV detectors are not safe to share across threads."""

    def __init__(self, model_path: str | None = None, min_size: int = 24, detect_width: int = 320):
        self.model_path = model_path if model_path is not None else os.environ.get("FERLAB_FACE_MODEL") or None
        self.kind = "yunet" if self.model_path else "haar"
        self.min_size, self.detect_width = min_size, detect_width
        self._local = threading.local()
        if self.model_path and not os.path.isfile(self.model_path):
            raise InputError(f"FERLAB_FACE_MODEL={self.model_path} does not exist; unset it to use the Haar cascade")

    def _detector(self):
        det = getattr(self._local, "detector", None)
        if det is None:
            if self.kind == "yunet":
                det = cv2.FaceDetectorYN.create(self.model_path, "", (320, 320), 0.8, 0.3, 50)
            else:
                det = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
                if det.empty():
                    raise RuntimeError("OpenCV's Haar cascade is missing from cv2.data; reinstall opencv-python-headless")
            self._local.detector = det
        return det

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Faces in an RGB (or gray) uint8 frame, largest first."""
        frame = np.asarray(rgb)
        h, w = frame.shape[:2]
        scale = min(1.0, self.detect_width / max(w, 1))  # detect on a small copy: 4x fewer pixels, same faces
        small = cv2.resize(frame, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA) \
            if scale < 1 else frame
        if self.kind == "yunet":
            bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR) if small.ndim == 3 else cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
            det = self._detector()
            det.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = det.detect(bgr)
            found = [] if faces is None else [(f[0], f[1], f[2], f[3], float(f[-1])) for f in faces]
        else:
            gray = _array_to_gray(small)
            gray = cv2.equalizeHist(gray)
            rects = self._detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                      minSize=(max(8, int(self.min_size * scale)),) * 2)
            found = [(x, y, bw, bh, 1.0) for x, y, bw, bh in (rects if len(rects) else [])]
        boxes = [Box(int(x / scale), int(y / scale), int(bw / scale), int(bh / scale), s) for x, y, bw, bh, s in found]
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)


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


def crop(frame: np.ndarray, box: Box) -> np.ndarray:
    return frame[box.y:box.y + box.h, box.x:box.x + box.w]


def find_faces(frame: np.ndarray, detector: FaceDetector | None = None, margin: float = 0.25,
               max_faces: int = 8) -> tuple[list[Box], bool]:
    """Square face boxes (``margin`` added), or the centre square when none is found.
    Returns ``(boxes, found)``."""
    h, w = frame.shape[:2]
    boxes = (detector or default_detector()).detect(frame)[:max_faces]
    if not boxes:
        return [center_box(w, h)], False
    return [b.square(margin, w, h) for b in boxes], True


def to_rgb_frame(image) -> np.ndarray:
    """Any user image -> RGB uint8 ``(H, W, 3)`` at full resolution, for detection and drawing.
    Transparency is composited on white; high-depth and grayscale images become gray RGB."""
    if isinstance(image, (bytes, bytearray, str)):
        image = open_image(image)
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


def draw_box(frame: np.ndarray, box: Box, text: str, color=(0, 200, 120)) -> None:
    """Box and label on an RGB frame, in place."""
    thick = max(1, frame.shape[1] // 320)
    cv2.rectangle(frame, (box.x, box.y), (box.x + box.w, box.y + box.h), color, thick)
    scale = max(0.4, frame.shape[1] / 1000)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    y = max(th + base, box.y)
    cv2.rectangle(frame, (box.x, y - th - base), (box.x + tw + 4, y), color, -1)
    cv2.putText(frame, text, (box.x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
