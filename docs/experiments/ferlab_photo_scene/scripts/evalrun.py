import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository
from ferlab import load_model
from ferlab.data import load_fer2013, to_arrays
from ferlab.evaluation import predict_arrays
from benchmarks.photo_pipeline import SIZE_BINS
d = np.load("/tmp/ferlab_photo_scene/crops_valid_600.npz")
meta = d["meta"]; face_px, idx = meta[:, 0], meta[:, 1].astype(int)
images, labels = to_arrays(load_fer2013("valid"), 48); lab = labels[idx]
for name in sys.argv[1:]:
    m = load_model(name)
    P = lambda x: predict_arrays(m.module, x, m.card).argmax(1)
    print(name, "PublicTest crops %.2f" % (100 * (P(images) == labels).mean()))
    for k in ["orig", "down_up", "oracle", "pipeline", "box_level"]:
        p = P(images[idx] if k == "orig" else d[k])
        print("  " + k.ljust(10) + "".join(f"{100*(p[s]==lab[s]).mean():8.1f}" for s in
              [(face_px >= lo) & (face_px < hi) for lo, hi in SIZE_BINS]) + f"{100*(p==lab).mean():8.2f}", flush=True)
