"""BlazeFace, the second face detector: the port gives the tflite's outputs, runs on any picture
size, and MTCNN keeps its faces while BlazeFace adds the ones it misses, in MTCNN's terms."""
from pathlib import Path

import cv2
import numpy as np
import torch

from ferlab import blazeface, mtcnn
from ferlab.faces import BLAZEFACE_MIN_SCORE, FaceDetector

ROOT = Path(__file__).resolve().parent.parent
ASTRONAUT = cv2.cvtColor(cv2.imread(str(ROOT / "ferlab" / "assets" / "astronaut.jpg")), cv2.COLOR_BGR2RGB)


def reference_pictures() -> np.ndarray:
    """Three 128x128 RGB pictures: the shipped astronaut photo's face, a smooth ramp and seeded noise
    (docs/experiments/face_recall/convert_blazeface.py stores the tflite's outputs on them)."""
    face = cv2.resize(ASTRONAUT[20:300, 100:380], (128, 128), interpolation=cv2.INTER_AREA)
    ramp = np.broadcast_to(np.linspace(0, 255, 128)[None, :, None], (128, 128, 3)).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    return np.stack([face, ramp, noise])


def test_port_gives_the_tflite_outputs():
    reference = np.load(ROOT / "tests" / "data" / "blazeface_reference.npz")
    with torch.no_grad():
        logits, raw = blazeface.net()(blazeface.to_input(reference_pictures()))
    assert logits.shape == (3, 896) and raw.shape == (3, 896, 16)
    assert np.abs(logits.numpy() - reference["logits"]).max() < 2e-3
    assert np.abs(raw.numpy() - reference["raw"]).max() < 2e-3
    assert torch.sigmoid(logits[0]).max() > 0.9 and torch.sigmoid(logits[1:]).max() < 0.5  # a face; ramp and noise


def dim(picture: np.ndarray, contrast: float = 0.12) -> np.ndarray:
    """A backlit, washed-out version of a picture: its contrast cut to ``contrast``."""
    return np.uint8(128 + (picture.astype(float) - 128) * contrast)


def test_detect_runs_on_any_picture_size():
    [mt] = FaceDetector(blazeface_min_score=None).detect(ASTRONAUT)
    boxes, points = blazeface.detect(ASTRONAUT, threshold=BLAZEFACE_MIN_SCORE)
    assert len(boxes) == 1 and boxes[0, 4] > 0.9
    x0, y0, x1, y1, _ = boxes[0]
    assert abs((x0 + x1) / 2 - mt.center[0]) < 0.15 * mt.w and abs((y0 + y1) / 2 - mt.center[1]) < 0.25 * mt.w
    assert 0.6 < (x1 - x0) / mt.w < 1.4
    eyes = points[0, :2]   # image-left eye first, both in the upper half of the box
    assert eyes[0, 0] < eyes[1, 0] and (eyes[:, 1] < (y0 + y1) / 2).all()
    # the same face pasted at three sizes into a wide picture: the pyramid finds each
    rng = np.random.default_rng(0)
    wide = cv2.GaussianBlur(rng.integers(60, 200, (700, 1100, 3), dtype=np.uint8), (0, 0), 6)
    face = ASTRONAUT[20:260, 110:340]
    placed = ((60, 100, 300), (560, 60, 130), (820, 420, 64))
    for x, y, side in placed:
        wide[y:y + side, x:x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    boxes, _ = blazeface.detect(wide, 24, BLAZEFACE_MIN_SCORE)
    assert len(boxes) == len(placed)
    for x, y, side in placed:
        [box] = [b for b in boxes if x < (b[0] + b[2]) / 2 < x + side and y < (b[1] + b[3]) / 2 < y + side]
        assert 0.3 * side < box[2] - box[0] < side


def test_blazeface_adds_the_faces_mtcnn_misses_in_mtcnns_terms():
    mtcnn_alone = FaceDetector(blazeface_min_score=None)
    [upright] = mtcnn_alone.detect(ASTRONAUT)
    assert FaceDetector().detect(ASTRONAUT) == [upright], "a face both find keeps MTCNN's box"
    washed_out = dim(ASTRONAUT)
    assert mtcnn_alone.detect(washed_out) == []
    [face] = FaceDetector().detect(washed_out)
    assert 0.7 <= face.score < 1.0, "BlazeFace's score"
    assert face.iou(upright) > 0.6, "O-Net's box, where MTCNN puts it on the face it sees"
    assert len(face.landmarks) == 5
    assert np.abs(np.subtract(face.landmarks, upright.landmarks)).max() < 0.1 * upright.w
    from ferlab.ui.live import live_detector
    assert live_detector().detect(washed_out) == [], "the live stream searches with MTCNN alone"


def test_refine_puts_another_detectors_box_in_mtcnns_terms():
    [upright] = FaceDetector(blazeface_min_score=None).detect(ASTRONAUT)
    boxes, _ = blazeface.detect(ASTRONAUT, threshold=BLAZEFACE_MIN_SCORE)
    refined, landmarks = mtcnn.refine(ASTRONAUT, boxes)
    assert refined.shape == (1, 5) and landmarks.shape == (1, 5, 2)
    assert refined[0, 4] > 0.9
    assert np.abs(landmarks[0] - np.asarray(upright.landmarks)).max() < 0.05 * upright.w
    empty, marks = mtcnn.refine(ASTRONAUT, np.zeros((0, 4)))
    assert empty.shape == (0, 5) and marks.shape == (0, 5, 2)


def test_a_face_the_upright_pass_finds_keeps_the_upright_box():
    det = FaceDetector()
    assert det.detect(ASTRONAUT) == det.detect(ASTRONAUT, angles=(0.0,))
    tilted = cv2.warpAffine(ASTRONAUT, cv2.getRotationMatrix2D((256, 256), 12, 1.0), (512, 512),
                            borderMode=cv2.BORDER_REFLECT)
    [up] = det.detect(tilted, angles=(0.0,))
    [face] = det.detect(tilted)
    assert face == up and face.landmarks == up.landmarks
