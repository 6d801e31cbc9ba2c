import math, sys, pickle, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository
from ferlab import load_model
from ferlab.data import load_fer2013, to_arrays
from ferlab.evaluation import predict_arrays
from ferlab.faces import landmark_transform, crop_corners
cache = pickle.load(open("/tmp/ferlab_photo_scene/cache_600.pkl", "rb"))
d = np.load("/tmp/ferlab_photo_scene/crops_valid_600.npz")
m = load_model("ferlab_photo")
images, labels = to_arrays(load_fer2013("valid"), 48)
idx = d["meta"][:, 1].astype(int); lab = labels[idx]
P = lambda x: predict_arrays(m.module, x, m.card).argmax(1)
pipe, orc, orig = P(d["pipeline"]), P(d["oracle"]), P(images[idx])
inside = []
for c in cache:
    t = c["t"]
    if c["landmarks"] is None:
        inside.append(np.nan); continue
    M = landmark_transform(c["landmarks"], 48)
    # sample crop pixel centres, map to image, then into the pasted frame's (turned) coordinates
    g = np.stack(np.meshgrid(np.arange(48) + 0.5, np.arange(48) + 0.5), -1).reshape(-1, 2)
    pts = np.c_[g, np.ones(len(g))] @ M.T
    cx, cy = t["cx"] - c["x0"], t["cy"] - c["y0"]
    a = math.radians(t["angle"])  # pasted counter-clockwise on screen by angle
    dx, dy = pts[:, 0] - cx, pts[:, 1] - cy
    # undo the turn: rotate by +angle in image coords (y down) to get frame-aligned coords
    u = dx * math.cos(a) - dy * math.sin(a); v = dx * math.sin(a) + dy * math.cos(a)
    h = t["side"] / 2
    inside.append(np.mean((np.abs(u) <= h) & (np.abs(v) <= h)))
inside = np.array(inside)
print("median share inside", np.nanmedian(inside))
for lo, hi in [(0, 0.8), (0.8, 0.9), (0.9, 0.97), (0.97, 1.01)]:
    s = (inside >= lo) & (inside < hi)
    print(f"inside {lo}-{hi}: n={s.sum()} orig {100*(orig[s]==lab[s]).mean():.1f} oracle {100*(orc[s]==lab[s]).mean():.1f} pipeline {100*(pipe[s]==lab[s]).mean():.1f}")
