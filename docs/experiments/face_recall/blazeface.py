"""face_recall.md: MediaPipe's BlazeFace as a second opinion beside MTCNN (the faces only it finds,
boxed and landmarked by MTCNN's O-Net), on PublicTest faces alone in their frame and in scenes:
recall, false boxes and the accuracy of the matched faces through the pipeline, side by side with
the pipeline as it is.  Each detector's raw output is computed once per picture and reused by
every setting (``sweep``); ``time`` re-runs the named settings without that cache.

    python docs/experiments/face_recall/blazeface.py sweep 300        # the settings above the grid
    python docs/experiments/face_recall/blazeface.py sweep 100 grid   # the grid
    python docs/experiments/face_recall/blazeface.py time 100 "before: ..." "chosen: ..."
    python docs/experiments/face_recall/blazeface.py time 100 "chosen: ..." max_pixels=500000
    python docs/experiments/face_recall/blazeface.py fraction          # the face sizes it finds
    python docs/experiments/face_recall/blazeface.py live              # its cost on a live frame
"""
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import numpy as np  # noqa: E402

from benchmarks.photo_pipeline import build_scene, match  # noqa: E402
from ferlab import blazeface, load_model, mtcnn  # noqa: E402
from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.evaluation import predict_arrays  # noqa: E402
from ferlab.faces import FaceDetector  # noqa: E402
from ferlab.pipeline import classify_faces, find_faces  # noqa: E402

SETTINGS = {   # name: FaceDetector arguments (the defaults are the chosen setting)
    "before: MTCNN, 3 turns, best-scored box": {"blazeface_min_score": None, "upright_first": False},
    "MTCNN upright": {"angles": (0,), "blazeface_min_score": None},
    "MTCNN, 3 turns, upright box first": {"blazeface_min_score": None},
    "MTCNN upright + BlazeFace 0.7": {"angles": (0,), "blazeface_onet_min": 0.05},
    "MTCNN, 3 turns, best-scored box + BlazeFace 0.7": {"upright_first": False, "blazeface_onet_min": 0.05},
    "MTCNN, 3 turns, upright box first + BlazeFace 0.65": {"blazeface_min_score": 0.65, "blazeface_onet_min": 0.05},
    "MTCNN, 3 turns, upright box first + BlazeFace 0.7": {"blazeface_onet_min": 0.05},
    "chosen: MTCNN, 3 turns, upright box first + BlazeFace 0.7, O-Net 0.2": {},
}
GRID = {}   # the first sweep (100 scenes): BlazeFace's and O-Net's floors, best-scored boxes
for t in (0.5, 0.6, 0.7, 0.8):
    for onet in (0.0, 0.05, 0.2):
        GRID[f"upright, BlazeFace {t}, O-Net {onet}"] = {"angles": (0,), "blazeface_min_score": t,
                                                        "blazeface_onet_min": onet, "upright_first": False}
        GRID[f"3 turns, BlazeFace {t}, O-Net {onet}"] = {"blazeface_min_score": t, "blazeface_onet_min": onet,
                                                        "upright_first": False}
SETTINGS.update(GRID)


def cached(fn, store, floor=None):
    """``fn`` remembered per (picture, min_face); BlazeFace's answers kept from score ``floor`` up and
    cut to each call's threshold."""
    def call(rgb, min_face, threshold):
        key = (hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest(), round(float(min_face), 3))
        if floor is None:
            key += (tuple(threshold),)
        if key not in store:
            store[key] = fn(rgb, min_face, floor if floor is not None else threshold)
        boxes, points = store[key]
        if floor is None:
            return boxes, points
        keep = boxes[:, 4] >= threshold
        return boxes[keep], points[keep]
    return call


def evaluate(name, scenes, images, labels, model, alone_idx, n):
    det = FaceDetector(**SETTINGS[name])
    alone = np.mean([bool(det.detect(images[i])) for i in alone_idx])
    found, px, right, index, false, spent = [], [], [], [], 0, 0.0
    for canvas, truth in scenes:
        start = time.perf_counter()
        faces = find_faces(canvas, detector=det)
        spent += time.perf_counter() - start
        results = classify_faces(model, faces)
        pairs = match(truth, faces.locations)
        false += len(faces.locations) - len(pairs)
        for i, t in enumerate(truth):
            found.append(i in pairs)
            px.append(t["face_px"])
            index.append(t["index"])
            right.append(i in pairs and int(np.argmax(results[pairs[i]].probabilities)) == t["label"])
    found, px, right, index = np.array(found), np.array(px), np.array(right), np.array(index)
    big = px >= 32
    crop_right = predict_arrays(model.module, images[index], model.card).argmax(1) == labels[index]
    print(f"| {name} | {alone:.3f} | {found[big].mean():.3f} | {found.mean():.3f} | {false / n:.2f} | "
          f"{1000 * spent / n:.0f} | {found.sum()} | {right[found].mean():.2%} | {crop_right[found].mean():.2%} | "
          f"{100 * (right[found].mean() - crop_right[found].mean()):+.2f} pt |", flush=True)


def fraction(images, n=300):
    """BlazeFace as MediaPipe runs it, one 128x128 picture: how often it finds a FER2013 face (score
    >= 0.5, its own threshold) filling a given share of the picture's side, on grey."""
    import cv2
    import torch
    net = blazeface.net()
    print(f"| share of the picture's side | found ({n} PublicTest faces) |\n|---|---|")
    for share in (0.12, 0.16, 0.2, 0.25, 0.3, 0.45, 0.6, 0.75):
        side, pictures = round(128 * share), []
        for im in images[:n]:
            canvas = np.full((128, 128), 128, np.uint8)
            o = (128 - side) // 2
            canvas[o:o + side, o:o + side] = cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)
            pictures.append(cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB))
        with torch.no_grad():
            logits, _ = net(blazeface.to_input(np.stack(pictures)))
        print(f"| {share:.0%} | {(torch.sigmoid(logits).amax(1) >= 0.5).float().mean():.1%} |")


def live_cost():
    """Each detector on a 640x480 frame at the live search's 48 px, one torch thread (as live frames run)."""
    import torch
    from ferlab.ui.live import LIVE_MIN_FACE
    torch.set_num_threads(1)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for name, fn in (("BlazeFace", blazeface.detect), ("MTCNN", mtcnn.detect)):
        fn(frame, LIVE_MIN_FACE)
        start = time.perf_counter()
        for _ in range(20):
            fn(frame, LIVE_MIN_FACE)
        print(f"{name}: {1000 * (time.perf_counter() - start) / 20:.1f} ms per 640x480 frame")


def main():
    if sys.argv[1] == "live":
        live_cost()
        return
    if sys.argv[1] == "fraction":
        fraction(to_arrays(load_fer2013("valid"), 48)[0])
        return
    mode, n = sys.argv[1], int(sys.argv[2])
    caps = [a for a in sys.argv[3:] if a.startswith("max_pixels=")]
    if caps:   # BlazeFace's first pyramid level capped (ferlab.blazeface.MAX_PIXELS)
        blazeface.MAX_PIXELS = float(caps[0].split("=")[1])
    chosen = [a for a in sys.argv[3:] if a not in caps] or [name for name in SETTINGS if name not in GRID]
    if chosen == ["grid"]:
        chosen = list(GRID)
    if mode == "sweep":
        mtcnn.detect = cached(mtcnn.detect, {})
        blazeface.detect = cached(blazeface.detect, {}, floor=0.5)
    images, labels = to_arrays(load_fer2013("valid"), 48)
    model = load_model("ferlab_photo")
    rng = np.random.default_rng(0)
    scenes = [build_scene(images, labels, rng, k) for k in range(n)]
    alone_idx = np.random.default_rng(1).choice(len(images), 1000, replace=False)
    print(f"{n} PublicTest scenes (seed 0), 1,000 PublicTest faces alone; {mode}")
    print("| setting | found alone | recall >= 32 px | recall, all | false boxes per scene | detection ms per scene "
          "| matched | pipeline | their crops | gap |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in chosen:
        evaluate(name, scenes, images, labels, model, alone_idx, n)


if __name__ == "__main__":
    main()
