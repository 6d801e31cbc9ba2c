"""Cache, per matched face on PublicTest scenes, a gray patch around it and its detection in patch coordinates."""
import math, sys, time, pickle
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository
from benchmarks.photo_pipeline import build_scene, match
from ferlab.data import load_fer2013, to_arrays
from ferlab.faces import Box, frame_transform, warp_crop
from ferlab.pipeline import find_faces
N = int(sys.argv[1])
__import__("os").makedirs("/tmp/ferlab_photo_scene", exist_ok=True)
images, labels = to_arrays(load_fer2013("valid"), 48)
rng = np.random.default_rng(0)
out = []
for k in range(N):
    canvas, truth = build_scene(images, labels, rng, k)
    faces = find_faces(canvas)
    for i, j in match(truth, faces.locations).items():
        t, loc = truth[i], faces.locations[j]
        side = int(3 * max(t["side"], loc.box.w, loc.box.h))
        x0, y0 = round(t["cx"] - side / 2), round(t["cy"] - side / 2)
        patch = warp_crop(faces.gray, frame_transform(Box(x0, y0, side, side), side), side)
        b = loc.box
        out.append(dict(t=t, patch=patch, x0=x0, y0=y0, box=(b.x - x0, b.y - y0, b.w, b.h), angle=loc.angle,
                        landmarks=None if loc.landmarks is None else [(x - x0, y - y0) for x, y in loc.landmarks]))
pickle.dump(out, open(f"/tmp/ferlab_photo_scene/cache_{N}.pkl", "wb"))
print(len(out))
