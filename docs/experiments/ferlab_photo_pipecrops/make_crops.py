"""Pipeline crops of Training faces: each face pasted alone into a small scene the way
benchmarks/photo_pipeline.py pastes faces (its size law, turn, contrast, brightness, blend and
backgrounds), found by ferlab's detector (upright search) and cut by the pipeline's own crop.
The fine-tune (finetune.py) then shows the model what ``ferlab.analyze`` really hands it.

    python docs/experiments/ferlab_photo_pipecrops/make_crops.py N [workers]

Writes /tmp/ferlab_pipecrops/train_crops.npz: ``index`` (Training row), ``crop`` (48x48 uint8),
``face_px``; faces the detector did not find, or boxed off the face, are left out.
"""
import math
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
OUT = Path("/tmp/ferlab_pipecrops")


def _init():
    import torch
    torch.set_num_threads(1)


def crop_faces(job):
    from benchmarks.photo_pipeline import BACKGROUNDS, background, match, paste
    from ferlab.data import load_fer2013, to_arrays
    from ferlab.faces import default_detector
    from ferlab.pipeline import find_faces
    worker, rows = job
    images, _ = to_arrays(load_fer2013("train"), 48)
    box_side = default_detector().framing.box_side
    rng = np.random.default_rng(1000 + worker)
    out = []
    for i in rows:
        face_px = math.exp(rng.uniform(math.log(24), math.log(240)))
        side = int(round(face_px / box_side))
        w = h = max(240, int(2.5 * side))  # under 240 px the detector would enlarge the picture
        canvas = background(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], w, h, rng)
        cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * side, h / 2 + rng.uniform(-0.1, 0.1) * side
        paste(canvas, images[i], cx, cy, side, rng.uniform(-10, 10), rng.uniform(0.8, 1.2), rng.uniform(-20, 20))
        faces = find_faces(canvas, angles=(0,))
        pairs = match([{"cx": cx, "cy": cy, "face_px": side * box_side}], faces.locations)
        if 0 in pairs:
            out.append((i, faces.crop(faces.locations[pairs[0]], 48)[0], side * box_side))
    return out


def main():
    n = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    from ferlab.data import load_fer2013
    total = len(load_fer2013("train"))
    rows = np.random.default_rng(0).permutation(total)[:n]
    OUT.mkdir(exist_ok=True)
    t0 = time.time()
    with Pool(workers, initializer=_init) as pool:
        parts = pool.map(crop_faces, [(k, rows[k::workers]) for k in range(workers)])
    found = [r for part in parts for r in part]
    np.savez(OUT / "train_crops.npz", index=np.array([r[0] for r in found]), crop=np.stack([r[1] for r in found]),
             face_px=np.array([r[2] for r in found]))
    print(f"{len(found)} of {n} Training faces found and cut, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
