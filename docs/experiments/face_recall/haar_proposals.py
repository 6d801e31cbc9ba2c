"""face_recall.md: OpenCV's Haar cascade boxes added to MTCNN's P-Net proposals before R-Net and
O-Net judge them; recall and false boxes on PublicTest scenes, side by side with the pipeline as it is.

    python docs/experiments/face_recall/haar_proposals.py 100
"""
import sys, time, os
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))  # the repository
import cv2, numpy as np, torch
import ferlab.mtcnn as M
from ferlab.data import load_fer2013, to_arrays
from benchmarks.photo_pipeline import build_scene, match
from ferlab.faces import FaceDetector
from ferlab.pipeline import find_faces

HAAR = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
orig = M.detect
MODE = {"on": False, "neighbors": 3}

@torch.inference_mode()
def detect(rgb, min_face=20.0, thresholds=M.THRESHOLDS):
    if not MODE["on"]:
        return orig(rgb, min_face, thresholds)
    boxes = M._propose(rgb, min_face, thresholds[0])
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hb = HAAR.detectMultiScale(gray, 1.1, MODE["neighbors"], minSize=(int(max(min_face, 24)),) * 2)
    if len(hb):   # the cascade's boxes join P-Net's before R-Net and O-Net judge them
        hb = np.asarray(hb, np.float32)
        extra = np.c_[hb[:, 0], hb[:, 1], hb[:, 0] + hb[:, 2], hb[:, 1] + hb[:, 3], np.full(len(hb), 0.5)]
        boxes = np.concatenate([boxes, M._square(extra)])
    return M._cascade(rgb, boxes, thresholds)

M.detect = detect
# the detector as it was when this was measured: MTCNN alone, the best-scored box across the passes
AS_MEASURED = FaceDetector(blazeface_min_score=None, upright_first=False)
images, labels = to_arrays(load_fer2013("valid"), 48)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
rng = np.random.default_rng(0)
scenes = [build_scene(images, labels, rng, k) for k in range(n)]
for mode in (False, True):
    MODE["on"] = mode
    found, px, false, t0 = [], [], 0, time.perf_counter()
    for canvas, truth in scenes:
        loc = find_faces(canvas, detector=AS_MEASURED).locations
        pairs = match(truth, loc)
        false += len(loc) - len(pairs)
        found += [i in pairs for i in range(len(truth))]
        px += [t["face_px"] for t in truth]
    found, px = np.array(found), np.array(px)
    big = px >= 32
    print(f"haar proposals {mode}: recall>=32 {found[big].mean():.3f} all {found.mean():.3f} "
          f"false/scene {false / n:.2f} ms/scene {1000 * (time.perf_counter() - t0) / n:.0f}", flush=True)
