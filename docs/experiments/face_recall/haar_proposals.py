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
from ferlab.pipeline import find_faces

HAAR = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
orig = M.detect
MODE = {"on": False, "neighbors": 3}

@torch.inference_mode()
def detect(rgb, min_face=20.0, thresholds=M.THRESHOLDS):
    if not MODE["on"]:
        return orig(rgb, min_face, thresholds)
    pnet, rnet, onet = M.nets()
    h, w = rgb.shape[:2]
    scale = 12.0 / max(min_face, 12.0)
    candidates = []
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hb = HAAR.detectMultiScale(gray, 1.1, MODE["neighbors"], minSize=(int(max(min_face, 24)),) * 2)
    with M._run_lock:
        while min(h, w) * scale >= 12:
            level = cv2.resize(rgb, (int(w * scale + 1), int(h * scale + 1)), interpolation=cv2.INTER_AREA)
            reg, prob = pnet(M._normalize(level[None]))
            score = prob[0, 1].numpy()
            ys, xs = np.nonzero(score >= thresholds[0])
            if len(ys):
                cells = np.stack([xs, ys], axis=1).astype(np.float32)
                q1, q2 = np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)
                boxes = np.concatenate([q1, q2, score[ys, xs, None], reg[0, :, ys, xs].numpy().T], axis=1)
                candidates.append(boxes[M._nms(boxes, 0.5)])
            scale *= M.PYRAMID_FACTOR
        if candidates:
            boxes = np.concatenate(candidates)
            boxes = boxes[M._nms(boxes, 0.7)]
            boxes = M._square(np.concatenate([M._regress(boxes[:, :5], boxes[:, 5:9])[:, :4], boxes[:, 4:5]], axis=1))
        else:
            boxes = np.zeros((0, 5), np.float32)
        if len(hb):
            hb = np.asarray(hb, np.float32)
            extra = np.c_[hb[:, 0], hb[:, 1], hb[:, 0] + hb[:, 2], hb[:, 1] + hb[:, 3], np.full(len(hb), 0.5)]
            boxes = np.concatenate([boxes, M._square(extra)])
        if len(boxes) == 0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        reg, prob = rnet(M._normalize(M._patches(rgb, boxes, 24)))
        keep = prob[:, 1].numpy() > thresholds[1]
        boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2].numpy()], axis=1)
        reg = reg[keep].numpy()
        pick = M._nms(boxes, 0.7)
        boxes = M._square(M._regress(boxes[pick], reg[pick]))
        if len(boxes) == 0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        reg, points, prob = onet(M._normalize(M._patches(rgb, boxes, 48)))
    keep = prob[:, 1].numpy() > thresholds[2]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2].numpy()], axis=1)
    points, reg = points[keep].numpy(), reg[keep].numpy()
    bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    landmarks = np.stack([bw[:, None] * points[:, :5] + boxes[:, 0:1] - 1,
                          bh[:, None] * points[:, 5:] + boxes[:, 1:2] - 1], axis=2)
    boxes = M._regress(boxes, reg)
    pick = M._nms(boxes, 0.7, by_min=True)
    return boxes[pick].astype(np.float32), landmarks[pick].astype(np.float32)

M.detect = detect
images, labels = to_arrays(load_fer2013("valid"), 48)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
rng = np.random.default_rng(0)
scenes = [build_scene(images, labels, rng, k) for k in range(n)]
for mode in (False, True):
    MODE["on"] = mode
    found, px, false, t0 = [], [], 0, time.perf_counter()
    for canvas, truth in scenes:
        loc = find_faces(canvas).locations
        pairs = match(truth, loc)
        false += len(loc) - len(pairs)
        found += [i in pairs for i in range(len(truth))]
        px += [t["face_px"] for t in truth]
    found, px = np.array(found), np.array(px)
    big = px >= 32
    print(f"haar proposals {mode}: recall>=32 {found[big].mean():.3f} all {found.mean():.3f} "
          f"false/scene {false / n:.2f} ms/scene {1000 * (time.perf_counter() - t0) / n:.0f}", flush=True)
