"""face_recall.md: does searching the photo at a higher resolution find more faces?  The default
detector with a smaller ``min_face`` (the picture is enlarged so that such a face spans MTCNN's
smallest window) and a larger pixel budget (``max_pixels``, which shrinks large photos), on
PublicTest scenes: recall, false boxes and detection time per scene, side by side.

    python docs/experiments/face_recall/detection_scale.py 100 [seed]
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import numpy as np  # noqa: E402

from benchmarks.photo_pipeline import build_scene, match  # noqa: E402
from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.faces import MAX_DETECT_PIXELS, FaceDetector  # noqa: E402
from ferlab.pipeline import find_faces  # noqa: E402

SETTINGS = {   # name: FaceDetector arguments
    "as shipped: min_face 24, 1 MP": {},
    "min_face 20, 1 MP": {"min_face": 20},
    "min_face 24, 2 MP": {"max_pixels": 2 * MAX_DETECT_PIXELS},
    "min_face 20, 2 MP": {"min_face": 20, "max_pixels": 2 * MAX_DETECT_PIXELS},
}


def compare(detectors: dict, n: int, seed: int) -> None:
    """Each named detector on the same ``n`` PublicTest scenes: recall, false boxes, detection time."""
    images, labels = to_arrays(load_fer2013("valid"), 48)
    rng = np.random.default_rng(seed)
    scenes = [build_scene(images, labels, rng, k) for k in range(n)]
    print(f"{n} PublicTest scenes (seed {seed})")
    print("| setting | recall >= 32 px | recall, all | false boxes per scene | detection ms per scene |")
    print("|---|---|---|---|---|")
    for name, det in detectors.items():
        found, px, false, spent = [], [], 0, 0.0
        for canvas, truth in scenes:
            start = time.perf_counter()
            located = find_faces(canvas, detector=det).locations
            spent += time.perf_counter() - start
            pairs = match(truth, located)
            false += len(located) - len(pairs)
            found += [i in pairs for i in range(len(truth))]
            px += [t["face_px"] for t in truth]
        found, px = np.array(found), np.array(px)
        print(f"| {name} | {found[px >= 32].mean():.3f} | {found.mean():.3f} | {false / n:.2f} | "
              f"{1000 * spent / n:.0f} |", flush=True)


def main():
    n, seed = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0
    compare({name: FaceDetector(**kwargs) for name, kwargs in SETTINGS.items()}, n, seed)


if __name__ == "__main__":
    main()
