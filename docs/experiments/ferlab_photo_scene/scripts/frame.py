import math, sys, pickle
import numpy as np, cv2
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository
from ferlab import load_model
from ferlab.data import load_fer2013, to_arrays
from ferlab.evaluation import predict_arrays
from ferlab.faces import Box, frame_transform, landmark_transform, warp_crop, FRAMINGS
from benchmarks.photo_pipeline import SIZE_BINS
cache = pickle.load(open("/tmp/ferlab_photo_scene/cache_600.pkl", "rb"))
model = load_model(sys.argv[1] if len(sys.argv) > 1 else "ferlab_photo")
images, labels = to_arrays(load_fer2013("valid"), 48)
face_px = np.array([c["t"]["face_px"] for c in cache]); lab = np.array([c["t"]["label"] for c in cache])
idx = np.array([c["t"]["index"] for c in cache])
def scaled(m, s, dy=0.0, dx=0.0):
    # scale the crop->image map about the crop centre by s, shift by (dx, dy) crop units of the frame
    c = 23.5
    S = np.array([[s, 0, c - s * c + dx * 48], [0, s, c - s * c + dy * 48], [0, 0, 1]])
    return (np.vstack([m, [0, 0, 1]]) @ S)[:2]
def pipe_m(c):
    if c["landmarks"] is not None:
        return landmark_transform(c["landmarks"], 48)
    return frame_transform(Box(*c["box"]), 48, c["angle"], FRAMINGS["mtcnn"])
def row(name, crops):
    p = predict_arrays(model.module, np.stack(crops), model.card).argmax(1)
    r = name.ljust(24) + "".join(f"{100*(p[s]==lab[s]).mean():8.1f}" for s in
                                 [(face_px >= lo) & (face_px < hi) for lo, hi in SIZE_BINS]) + f"{100*(p==lab).mean():8.1f}"
    print(r, flush=True)
print("orig:", end=" "); row("orig", list(images[idx]))
base = [pipe_m(c) for c in cache]
for s in (0.85, 0.9, 0.95, 1.0, 1.05, 1.1):
    row(f"scale {s}", [warp_crop(c["patch"], scaled(m, s), 48) for c, m in zip(cache, base)])
for dy in (-0.04, -0.02, 0.02, 0.04):
    row(f"dy {dy}", [warp_crop(c["patch"], scaled(m, 1.0, dy), 48) for c, m in zip(cache, base)])
