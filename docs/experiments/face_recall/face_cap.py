"""face_recall.md: what ``MAX_FACES`` (faces analysed per photo, largest first) costs recall in the
scenes of ``benchmarks/photo_pipeline.py``: each scene searched once with no cap, the cap then
applied to the same detections (``find_faces`` keeps the first ``max_faces`` of the detector's
largest-first list).

    python docs/experiments/face_recall/face_cap.py 300 [seed] [cap ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import numpy as np  # noqa: E402

from benchmarks.photo_pipeline import build_scene, match  # noqa: E402
from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.pipeline import MAX_FACES, find_faces  # noqa: E402


def main():
    n, seed = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0
    caps = [int(c) for c in sys.argv[3:]] or [MAX_FACES]
    images, labels = to_arrays(load_fer2013("valid"), 48)
    rng = np.random.default_rng(seed)
    found = {cap: [] for cap in caps + [None]}
    false = {cap: 0 for cap in caps + [None]}
    sizes, crowded = [], 0
    for k in range(n):
        canvas, truth = build_scene(images, labels, rng, k)
        located = find_faces(canvas, max_faces=10_000).locations
        crowded += len(located) > min(caps)
        sizes += [t["face_px"] for t in truth]
        for cap in found:
            kept = located if cap is None else located[:cap]
            pairs = match(truth, kept)
            found[cap] += [i in pairs for i in range(len(truth))]
            false[cap] += len(kept) - len(pairs)
    big = np.array(sizes) >= 32
    print(f"{n} PublicTest scenes (seed {seed}), {len(sizes)} faces, {big.sum()} >= 32 px; "
          f"{crowded} scenes with more than {min(caps)} boxes")
    print("| cap | recall >= 32 px | recall, all | false boxes per scene |\n|---|---|---|---|")
    for cap, hits in found.items():
        hits = np.array(hits)
        print(f"| {cap or 'none'} | {hits[big].mean():.3f} | {hits.mean():.3f} | {false[cap] / n:.2f} |")


if __name__ == "__main__":
    main()
