"""How fast the lab answers on this machine (CPU unless CUDA is present).

    python -m benchmarks.app_speed [--model cnn] [--repeats 30] [--out results/app_speed.md]

Measures, in one run: cold start (a fresh Python process importing the app, building the Blocks
and answering one classify call), classify + Grad-CAM per uploaded photo (p50 / p95, the Classify
tab's handler on a 640x480 JPEG file), the live stream's frames per second on 640x480 frames
(face detection, classification and Grad-CAM overlay, frames handled one after another as the
stream does), and the Layers tab's all-layer grid.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
from benchmarks import device_label, report

from ferlab.ui import ModelRegistry
from ferlab.ui.classify import classify_image
from ferlab.ui.layers_tab import layer_grid
from ferlab.ui.live import classify_stream


def test_frame() -> tuple[np.ndarray, str]:
    """A 640x480 frame with one face: a PrivateTest face when the data is here, else the shipped
    public-domain astronaut portrait's face."""
    frame = np.full((480, 640, 3), 110, np.uint8)
    try:
        from ferlab.data import load_fer2013, to_arrays
        images, labels = to_arrays(load_fer2013("test"))
        face = cv2.cvtColor(images[int(np.flatnonzero(labels == 3)[0])], cv2.COLOR_GRAY2RGB)
        where = "a PrivateTest face"
    except Exception:
        photo = cv2.imread(str(ROOT / "ferlab" / "assets" / "astronaut.jpg"))
        face, where = cv2.cvtColor(photo[20:260, 110:340], cv2.COLOR_BGR2RGB), "the astronaut's face"
    face = cv2.resize(face, (220, 220), interpolation=cv2.INTER_CUBIC)
    frame[130:350, 210:430] = face
    return frame, where


def percentiles(ms):
    return f"{np.percentile(ms, 50):.1f} / {np.percentile(ms, 95):.1f}"


COLD = """
import time; t = time.perf_counter()
from ferlab.ui import build_app, ModelRegistry
from ferlab.ui.classify import classify_image
registry = ModelRegistry()
demo = build_app(registry)
classify_image(registry, {path!r}, {model!r})
print(time.perf_counter() - t)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint name (default: the app's default)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    registry = ModelRegistry()
    model = args.model or registry.default()
    if model is None:
        sys.exit(registry.missing_message())
    frame, where = test_frame()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "photo.jpg")
        cv2.imwrite(path, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        # offline and without FER2013: building the lab must touch neither the network nor the data
        offline = dict(os.environ, FERLAB_DATA=str(Path(tmp) / "no-data-here"), HF_HUB_OFFLINE="1")
        cold = float(subprocess.run([sys.executable, "-c", COLD.format(root=str(ROOT), path=path, model=model)],
                                    capture_output=True, text=True, check=True, cwd=ROOT,
                                    env=offline).stdout.strip().splitlines()[-1])
        _, _, sentence, *_ = classify_image(registry, path, model)
        found = "No face was found" not in sentence
        photo = []
        for i in range(args.repeats + 3):
            t = time.perf_counter()
            classify_image(registry, path, model)
            if i >= 3:
                photo.append((time.perf_counter() - t) * 1000)
        frames = [np.roll(frame, s, axis=1) for s in range(0, 60, 2)]  # a face that moves a little
        tracker = None  # one browser session's face tracker, carried from frame to frame
        for f in frames[:3]:
            _, tracker = classify_stream(registry, f, model, True, 0.45, tracker)
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < 10:
            _, tracker = classify_stream(registry, frames[n % len(frames)], model, True, 0.45, tracker)
            n += 1
        fps = n / (time.perf_counter() - t)
        grid = []
        for i in range(max(5, args.repeats // 3) + 1):
            t = time.perf_counter()
            layer_grid(registry, path, model, "predicted class", None)
            if i:
                grid.append((time.perf_counter() - t) * 1000)
    layers = len(registry.get(model).module.explainable_layers)
    text = (f"`{model}` on {device_label()}; "
            f"input: 640x480 frame with {where} ({'detected' if found else 'not detected: no face'} by the "
            "default face detector)\n\n| measure | value |\n|---|---|\n"
            f"| cold start to first response, offline and without data (import, build UI, load model, classify) | {cold:.1f} s |\n"
            f"| classify + Grad-CAM per uploaded photo, p50 / p95 | {percentiles(photo)} ms |\n"
            f"| live stream, 640x480 frames, detection + classification + Grad-CAM overlay | {fps:.1f} FPS |\n"
            f"| Layers tab: Grad-CAM at all {layers} layers + CAM + top-8 activations, p50 / p95 | "
            f"{percentiles(grid)} ms |\n")
    report(text, args.out)


if __name__ == "__main__":
    main()
