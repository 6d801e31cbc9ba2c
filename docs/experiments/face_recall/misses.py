"""face_recall.md: why the default detector misses the faces of 32 px and more that it misses in the
scenes of ``benchmarks/photo_pipeline.py``.  Each missed face is put in the first of these that holds:

- *boxed off-size*: a box is centred on it at a size the matcher rejects (``boxed_off_size``);
- *not found alone*: the detector misses it in its own 48x48 frame too (the face itself);
- *found in a window*: a box centred on it in the part of the scene around it (three frame sides
  square), none in the whole scene (the scene's scale and what else is in it);
- *lost in the scene*: found alone, but not in the scene, even around it (blending, resampling).

    python docs/experiments/face_recall/misses.py 300 [seed]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import numpy as np  # noqa: E402

from benchmarks.photo_pipeline import SIZES, boxed_off_size, build_scene, match  # noqa: E402
from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.faces import default_detector  # noqa: E402
from ferlab.pipeline import find_faces  # noqa: E402

CAUSES = ("boxed off-size", "not found alone", "found in a window", "lost in the scene")


def main():
    n, seed = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0
    images, labels = to_arrays(load_fer2013("valid"), 48)
    rng = np.random.default_rng(seed)
    det = default_detector()
    counts = {(w, c): 0 for w, _ in SIZES for c in CAUSES}
    faces_by_width = {w: 0 for w, _ in SIZES}
    for k in range(n):
        canvas, truth = build_scene(images, labels, rng, k)
        located = find_faces(canvas, detector=det).locations
        pairs = match(truth, located)
        off_size = boxed_off_size(truth, located, pairs)
        width = canvas.shape[1]
        for i, t in enumerate(truth):
            if t["face_px"] < 32:
                continue
            faces_by_width[width] += 1
            if i in pairs:
                continue
            if i in off_size:
                cause = "boxed off-size"
            elif not det.detect(images[t["index"]]):
                cause = "not found alone"
            else:
                r = int(1.5 * t["side"])
                x0, y0 = max(0, int(t["cx"]) - r), max(0, int(t["cy"]) - r)
                window = canvas[y0:int(t["cy"]) + r, x0:int(t["cx"]) + r]
                near = [b for b in det.detect(window)   # on this face, not a neighbour's
                        if np.hypot(x0 + b.center[0] - t["cx"], y0 + b.center[1] - t["cy"]) < 0.3 * t["face_px"]]
                cause = "found in a window" if near else "lost in the scene"
            counts[width, cause] += 1
    total = sum(faces_by_width.values())
    missed = sum(counts.values())
    print(f"{n} PublicTest scenes (seed {seed}): {total} faces >= 32 px, {missed} missed (recall {1 - missed / total:.3f})")
    print("| scene | faces >= 32 px | " + " | ".join(CAUSES) + " |")
    print("|---" * (len(CAUSES) + 2) + "|")
    for w, h in SIZES:
        print(f"| {w}x{h} | {faces_by_width[w]} | " + " | ".join(str(counts[w, c]) for c in CAUSES) + " |")
    print(f"| all | {total} | " + " | ".join(str(sum(counts[w, c] for w, _ in SIZES)) for c in CAUSES) + " |")


if __name__ == "__main__":
    main()
