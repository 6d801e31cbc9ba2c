"""face_recall.md: what reading many faces costs.  A 1600x1200 picture holding 32 PublicTest faces
(110 px frames on a 4 x 8 grid, pasted as ``benchmarks/photo_pipeline.py`` pastes them): the search
once, then classification with Grad-CAM and drawing for the 8 and the 32 largest faces (best of 3).

    python docs/experiments/face_recall/many_faces.py
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import numpy as np  # noqa: E402

from benchmarks.photo_pipeline import background, paste  # noqa: E402
from ferlab import load_model  # noqa: E402
from ferlab.annotate import draw_faces  # noqa: E402
from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.pipeline import Faces, classify_faces, find_faces  # noqa: E402


def main():
    images, _ = to_arrays(load_fer2013("valid"), 48)
    canvas = background("blocks", 1600, 1200, np.random.default_rng(0))
    for k in range(32):
        paste(canvas, images[k], 100 + 200 * (k % 8), 150 + 300 * (k // 8), 110, 0.0, 1.0, 0.0)
    model = load_model("ferlab_photo")
    start = time.perf_counter()
    faces = find_faces(canvas, max_faces=1000)
    print(f"{len(faces.locations)} of 32 faces found; search {1000 * (time.perf_counter() - start):.0f} ms")
    for cap in (8, 32):
        some = Faces(faces.frame, faces.gray, faces.locations[:cap])
        times = []
        for _ in range(3):
            start = time.perf_counter()
            results = classify_faces(model, some, "gradcam")
            draw_faces(canvas, results, [r.emotion for r in results])
            times.append(time.perf_counter() - start)
        print(f"{cap} faces: classify + Grad-CAM + drawing {1000 * min(times):.0f} ms")


if __name__ == "__main__":
    main()
