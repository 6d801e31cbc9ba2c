"""Would cnn_cosine (not shipped) help the ensemble?  PublicTest only: flip-TTA probabilities of the
shipped FER2013 models with and without the run's exported weights, the subset that
``select_ensemble`` chooses, and its PublicTest accuracy.  PrivateTest is not read.

    python results/experiments/cnn_cosine/ensemble_check.py runs/cnn_cosine
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from ferlab.checkpoints import load_model  # noqa: E402
from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.evaluation import predict_arrays, select_ensemble  # noqa: E402

images, labels = to_arrays(load_fer2013("valid"))
names = ["cnn", "ferlab_best", "mobilenet_v2", "resnet_se", "vgg19"]
paths = {n: ROOT / "checkpoints" / n for n in names} | {"cnn_cosine": Path(sys.argv[1])}
probs = {}
for name, path in paths.items():
    m = load_model(str(path))
    probs[name] = predict_arrays(m.module, images, m.card, m.device, tta=True)
    plain = predict_arrays(m.module, images, m.card, m.device, tta=False)
    print(f"{name}: PublicTest {100 * (plain.argmax(1) == labels).mean():.2f}%, "
          f"flip TTA {100 * (probs[name].argmax(1) == labels).mean():.2f}%")


def accuracy(subset):
    return 100 * (np.mean([probs[n] for n in subset], axis=0).argmax(1) == labels).mean()


for pool in (names, names + ["cnn_cosine"]):
    chosen = select_ensemble({n: probs[n] for n in pool}, labels)
    print(f"pool {'+'.join(pool)}: chosen {' + '.join(chosen)}, PublicTest (TTA) {accuracy(chosen):.2f}%; "
          f"all {len(pool)}: {accuracy(pool):.2f}%")
