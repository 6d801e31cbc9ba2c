"""Issue 31: where does the small-face accuracy gap come from?  Crop strategies on PublicTest scenes."""
import math, sys, time
import numpy as np, cv2
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository
from benchmarks.photo_pipeline import build_scene, match, SIZE_BINS
from ferlab import load_model
from ferlab.data import load_fer2013, to_arrays
from ferlab.evaluation import predict_arrays
from ferlab.faces import Box, frame_transform, landmark_transform, warp_crop, eye_angle
from ferlab.pipeline import find_faces

N = int(sys.argv[1]) if len(sys.argv) > 1 else 150
__import__("os").makedirs("/tmp/ferlab_photo_scene", exist_ok=True)
model = load_model("ferlab_photo")
images, labels = to_arrays(load_fer2013("valid"), 48)
rng = np.random.default_rng(0)
crops = {k: [] for k in ["pipeline", "box_level", "box_flat", "lm_angle_box_scale", "oracle", "oracle_flat", "down_up"]}
meta = []
t0 = time.time()
for k in range(N):
    canvas, truth = build_scene(images, labels, rng, k)
    faces = find_faces(canvas)
    pairs = match(truth, faces.locations)
    for i, j in pairs.items():
        t, loc = truth[i], faces.locations[j]
        g = faces.gray
        crops["pipeline"].append(faces.crop(loc, 48)[0])
        crops["box_level"].append(warp_crop(g, frame_transform(loc.box, 48, loc.angle, loc.framing), 48))
        crops["box_flat"].append(warp_crop(g, frame_transform(loc.box, 48, 0.0, loc.framing), 48))
        if loc.landmarks is not None:
            m = landmark_transform(loc.landmarks, 48)
            ang = math.degrees(math.atan2(m[1, 0], m[0, 0]))
        else:
            ang = loc.angle
        crops["lm_angle_box_scale"].append(warp_crop(g, frame_transform(loc.box, 48, ang, loc.framing), 48))
        frame = Box(round(t["cx"] - t["side"] / 2), round(t["cy"] - t["side"] / 2), t["side"], t["side"])
        crops["oracle"].append(warp_crop(g, frame_transform(frame, 48, -t["angle"]), 48))
        crops["oracle_flat"].append(warp_crop(g, frame_transform(frame, 48, 0.0), 48))
        s = max(2, t["side"])
        small = cv2.resize(images[t["index"]], (s, s), interpolation=cv2.INTER_AREA if s < 48 else cv2.INTER_CUBIC)
        crops["down_up"].append(cv2.resize(small, (48, 48), interpolation=cv2.INTER_LINEAR))
        meta.append((t["face_px"], t["index"], t["label"], loc.landmarks is not None,
                     ang, -t["angle"]))
print(f"{N} scenes, {len(meta)} matched, {time.time()-t0:.0f}s", flush=True)
meta = np.array(meta)
np.savez("/tmp/ferlab_photo_scene/crops_valid_%d.npz" % N, meta=meta, **{k: np.stack(v) for k, v in crops.items()})
face_px, idx, lab = meta[:, 0], meta[:, 1].astype(int), meta[:, 2].astype(int)
def P(x):
    return predict_arrays(model.module, x, model.card)
probs = {"orig": P(images[idx])}
for kname, v in crops.items():
    probs[kname] = P(np.stack(v))
flip = lambda x: np.ascontiguousarray(x[:, :, ::-1])
probs["orig+flip"] = (probs["orig"] + P(flip(images[idx]))) / 2
probs["pipeline+flip"] = (probs["pipeline"] + P(flip(np.stack(crops["pipeline"])))) / 2
probs["pipe+box"] = (probs["pipeline"] + probs["box_level"]) / 2
probs["pipe+box+flips"] = (probs["pipeline+flip"] + (probs["box_level"] + P(flip(np.stack(crops["box_level"])))) / 2) / 2
probs["oracle+flip"] = (probs["oracle"] + P(flip(np.stack(crops["oracle"])))) / 2
np.savez("/tmp/ferlab_photo_scene/probs_%d.npz" % N, **probs)
preds = {k: v.argmax(1) for k, v in probs.items()}
bins = [(lo, hi) for lo, hi in SIZE_BINS]
print("strategy".ljust(22) + "".join(f"{lo}-{hi}".rjust(12) for lo, hi in bins) + "all".rjust(10))
for kname, p in preds.items():
    row = kname.ljust(22)
    for lo, hi in bins:
        sel = (face_px >= lo) & (face_px < hi)
        row += f"{100*(p[sel]==lab[sel]).mean():12.1f}"
    row += f"{100*(p==lab).mean():10.1f}"
    print(row)
print("n per bin", [int(((face_px >= lo) & (face_px < hi)).sum()) for lo, hi in bins])
print("landmarks share", meta[:, 3].mean(), "angle err (lm) median", np.median(np.abs(meta[:, 4] - meta[:, 5])))
