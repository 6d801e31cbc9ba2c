"""face_recall.md: dlib's CNN face detector (MMOD) ported to PyTorch, then tried as a third detector
beside MTCNN and BlazeFace in the scenes of ``benchmarks/photo_pipeline.py``.  The weights are
read from ``mmod_human_face_detector.dat`` of the ``face_recognition_models`` package on PyPI
(CC0); dlib itself (``dlib-bin``) is needed only for ``check``.  Nothing here is a ferlab dependency:

    pip install --target /tmp/dlibt dlib-bin face_recognition_models
    PYTHONPATH=/tmp/dlibt python docs/experiments/face_recall/mmod_port.py check
    PYTHONPATH=/tmp/dlibt python docs/experiments/face_recall/mmod_port.py time
    PYTHONPATH=/tmp/dlibt python docs/experiments/face_recall/mmod_port.py scenes 100 0

The file is dlib's serialized network: layers tagged from the input up (``input_rgb_image_pyramid``
with the mean colour, then ``con_4``, ``bn_con2``, ``relu_1`` ... and ``loss_mmod_`` with one 80x80
window), integers in dlib's compact form, tensors as a version, four sizes and raw float32.  The
network (dlib's ``dnn_mmod_face_detection_ex.cpp``): three 5x5 stride-2 convolutions of 16, 32, 32
filters, three 5x5 of 45, each with batch norm and ReLU, and a 9x9 convolution to one score map;
a score above 0 at output (x, y) is an 80x80 window centred at input (8x + 14, 8y + 14), searched
over a pyramid of 5/6 steps, overlapping windows (IoU > 0.338, from the file's options) suppressed.
"""
import importlib.util
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
sys.path.insert(0, str(Path(__file__).resolve().parent))      # detection_scale.py
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ferlab import mtcnn  # noqa: E402
from ferlab.faces import SAME_FACE_IOU, BLAZEFACE_ONET_MIN, Box, FaceDetector  # noqa: E402

MEAN_RGB = (122.782, 117.001, 104.298)   # stored in the file (input_rgb_image_pyramid)
WINDOW, STRIDE, OFFSET, NMS_IOU, STEP = 80, 8, 14, 0.338, 5 / 6
ASTRONAUT = Path(__file__).resolve().parents[3] / "ferlab" / "assets" / "astronaut.jpg"


class Reader:
    def __init__(self, raw: bytes, pos: int):
        self.raw, self.pos = raw, pos

    def int(self) -> int:
        head = self.raw[self.pos]
        size, negative = head & 0x0F, head & 0x80
        value = int.from_bytes(self.raw[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if negative else value

    def float(self) -> float:
        mantissa = self.int()
        return mantissa * 2.0 ** self.int()

    def tensor(self) -> np.ndarray:
        self.int()  # version
        shape = [self.int() for _ in range(4)]
        values = np.frombuffer(self.raw, "<f4", int(np.prod(shape)), self.pos).copy()
        self.pos += 4 * values.size
        return values


def load_layers():
    folder = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0])
    raw = (folder / "models" / "mmod_human_face_detector.dat").read_bytes()
    layers = []
    for m in re.finditer(rb"con_4|bn_con2", raw):
        r = Reader(raw, m.end())
        params = r.tensor()
        if m.group() == b"con_4":
            filters, _, _, stride, _, padding, _ = [r.int() for _ in range(7)]
            r.int()
            shape = [r.int() for _ in range(4)]   # the filters' alias: (filters, channels, rows, columns)
            n = int(np.prod(shape))
            layers.append(("conv", torch.tensor(params[:n].reshape(shape)), torch.tensor(params[n:]), stride, padding))
        else:
            for _ in range(10):
                r.int()                            # gamma's and beta's aliases
            r.tensor(), r.tensor()                 # the last batch's means and inverse deviations
            mean, var = r.tensor(), r.tensor()     # running statistics: what inference uses
            r.int(), r.int()
            for _ in range(4):
                r.float()
            eps = r.float()
            n = len(mean)
            scale = params[:n] / np.sqrt(var + eps)
            layers.append(("bn", torch.tensor(scale), torch.tensor(params[n:] - mean * scale)))
    return layers


LAYERS = None


def scores(rgb: np.ndarray) -> np.ndarray:
    global LAYERS
    LAYERS = LAYERS or load_layers()
    x = torch.from_numpy((rgb.astype(np.float32) - np.float32(MEAN_RGB)) / 256.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        for layer in LAYERS:
            if layer[0] == "conv":
                x = F.conv2d(x, layer[1], layer[2], stride=layer[3], padding=layer[4])
            else:
                x = F.relu(x * layer[1][None, :, None, None] + layer[2][None, :, None, None])
    return x[0, 0].numpy()


def detect(rgb: np.ndarray, threshold: float = 0.0) -> list[tuple]:
    """(x0, y0, x1, y1, score) of each face, in ``rgb``'s pixels, best first."""
    found, scale, level = [], 1.0, rgb
    while min(level.shape[:2]) >= WINDOW // 2:
        out = scores(level)
        for y, x in zip(*np.nonzero(out > threshold)):
            cx, cy, half = (STRIDE * x + OFFSET) / scale, (STRIDE * y + OFFSET) / scale, WINDOW / 2 / scale
            found.append((cx - half, cy - half, cx + half, cy + half, float(out[y, x])))
        scale *= STEP
        level = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    kept, boxes = [], []
    for b in sorted(found, key=lambda b: -b[4]):
        box = Box.from_corners(*b[:4])
        if all(box.iou(k) <= NMS_IOU for k in boxes):
            boxes.append(box)
            kept.append(b)
    return kept


class WithMMOD(FaceDetector):
    """ferlab's default detector, plus the upright faces only MMOD finds (on the detection picture
    enlarged ``upsample`` times), boxed and landmarked by MTCNN's O-Net as BlazeFace's are."""

    def __init__(self, upsample: int, onet_min: float = BLAZEFACE_ONET_MIN):
        super().__init__()
        self.upsample, self.onet_min = upsample, onet_min

    def _with_blazeface(self, rgb, min_face, boxes, points):
        boxes, points = super()._with_blazeface(rgb, min_face, boxes, points)
        big = rgb if self.upsample == 1 else cv2.resize(rgb, None, fx=self.upsample, fy=self.upsample,
                                                        interpolation=cv2.INTER_LINEAR)
        seen = [Box.from_corners(*b[:4]) for b in boxes.reshape(-1, 5)]
        new = []
        for b in detect(big):
            b = np.array(b)
            b[:4] /= self.upsample
            if all(Box.from_corners(*b[:4]).iou(k) <= SAME_FACE_IOU for k in seen):
                new.append(b)
        if not new:
            return boxes, points
        refined, marks = mtcnn.refine(rgb, np.asarray(new))
        keep = refined[:, 4] >= self.onet_min
        return (np.concatenate([boxes.reshape(-1, 5), refined[keep]]),
                np.concatenate([points.reshape(-1, 5, 2), marks[keep]]))


def check():
    """The port against dlib on the shipped astronaut portrait."""
    import dlib
    folder = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0])
    reference = dlib.cnn_face_detection_model_v1(str(folder / "models" / "mmod_human_face_detector.dat"))
    portrait = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    print("dlib:", [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), round(d.confidence, 3))
                    for d in reference(portrait, 0)])
    print("port:", [tuple(round(float(v), 1) for v in b) for b in detect(portrait)])


def timing():
    torch.set_num_threads(2)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for upsample in (1, 2):
        big = cv2.resize(frame, (640 * upsample, 480 * upsample))
        detect(big)
        start = time.perf_counter()
        detect(big)
        print(f"port, 640x480 enlarged {upsample}x: {1000 * (time.perf_counter() - start):.0f} ms")


def scenes(n: int, seed: int):
    from detection_scale import compare   # the same comparison, in this folder
    compare({"as shipped": FaceDetector(), "+ MMOD": WithMMOD(1), "+ MMOD, picture enlarged 2x": WithMMOD(2)}, n, seed)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check()
    elif sys.argv[1] == "time":
        timing()
    else:
        scenes(int(sys.argv[2]), int(sys.argv[3]))
