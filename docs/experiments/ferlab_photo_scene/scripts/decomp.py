import math, sys, pickle
import numpy as np, cv2
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository
from ferlab import load_model
from ferlab.data import load_fer2013, to_arrays
from ferlab.evaluation import predict_arrays
from ferlab.faces import Box, frame_transform, landmark_transform, warp_crop, FRAMINGS
from ferlab.pipeline import find_faces
cache = pickle.load(open("/tmp/ferlab_photo_scene/cache_600.pkl", "rb"))
model = load_model("ferlab_photo")
images, labels = to_arrays(load_fer2013("valid"), 48)
idx = np.array([c["t"]["index"] for c in cache]); lab = labels[idx]
acc = lambda x: 100 * (predict_arrays(model.module, np.stack(x), model.card).argmax(1) == lab).mean()
rng = np.random.default_rng(1)
print("orig", acc(images[idx]))
print("photometric", acc([np.clip(images[i] * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20), 0, 255).astype(np.uint8) for i in idx]))
def rot_back(im, a):
    m = cv2.getRotationMatrix2D((23.5, 23.5), a, 1.0)
    r = cv2.warpAffine(im, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(r, cv2.getRotationMatrix2D((23.5, 23.5), -a, 1.0), (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
print("rotate+back", acc([rot_back(images[c["t"]["index"]], c["t"]["angle"]) for c in cache]))
# canonical framing on the clean image: detect on the 48x48 alone, crop the landmark frame from it
crops, ok = [], []
for i in idx:
    f = find_faces(images[i], angles=(0.0,))
    if f.locations:
        crops.append(f.crop(f.locations[0], 48)[0]); ok.append(True)
    else:
        crops.append(images[i]); ok.append(False)
ok = np.array(ok)
p = predict_arrays(model.module, np.stack(crops), model.card).argmax(1)
po = predict_arrays(model.module, images[idx], model.card).argmax(1)
print("reframed clean (found)", 100 * (p[ok] == lab[ok]).mean(), "orig on same", 100 * (po[ok] == lab[ok]).mean(), ok.mean())
# pipeline vs oracle geometry in frame units
rows = []
for c in cache:
    if c["landmarks"] is None: continue
    m = landmark_transform(c["landmarks"], 48)
    t = c["t"]; side = t["side"]
    cx, cy = t["cx"] - c["x0"], t["cy"] - c["y0"]
    s = math.hypot(m[0, 0], m[1, 0]) * 48 / side
    a = math.degrees(math.atan2(m[1, 0], m[0, 0])) - (-t["angle"])
    centre = m @ np.array([23.5, 23.5, 1.0])
    rows.append((s, a, (centre[0] - cx) / side, (centre[1] - cy) / side, t["face_px"]))
r = np.array(rows)
for name, col in zip(["scale", "angle", "dx", "dy"], r[:, :4].T):
    print(name, "median %.3f  p10 %.3f p90 %.3f  std %.3f" % (np.median(col), *np.percentile(col, [10, 90]), col.std()))
small = r[:, 4] < 48
print("small faces scale std", r[small, 0].std(), "dx std", r[small, 2].std(), "large", r[~small, 0].std(), r[~small, 2].std())
