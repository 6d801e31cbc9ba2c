"""What float16 and int8 storage cost in accuracy and save in bytes, per shipped checkpoint.

    python benchmarks/storage.py [--checkpoint cnn ...] [--out results/storage.md]

Each checkpoint's float32 weights are saved with every storage (``ferlab.checkpoints.save_checkpoint``)
and loaded back through ``load_model``, side by side in one run; accuracy on PublicTest and
PrivateTest (against the labels the model was trained on: FER+ majority for ``ferplus``), and the
largest change of any class probability against float32.  The last rows give
the file sizes of an untrained ``vgg19`` (20 M parameters), the model the 25 MB limit keeps out:
sizes do not depend on training.
"""
import functools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import checkpoints_parser, report  # noqa: E402

from ferlab import list_models, load_model  # noqa: E402
from ferlab.checkpoints import STORAGE_DTYPES, WEIGHTS_FILE, base_card, save_checkpoint, trained_labels  # noqa: E402
from ferlab.evaluation import predict_arrays  # noqa: E402
from ferlab.models import create_model  # noqa: E402
from ferlab.training import load_split  # noqa: E402


def main(argv=None):
    args = checkpoints_parser(__doc__).parse_args(argv)
    from ferlab.data import default_source
    source = str(args.source or default_source())

    @functools.cache  # each model is scored against the labels it was trained on; decoded once per set
    def splits(labels):
        return {"PublicTest": load_split("valid", source, 48, labels),
                "PrivateTest": load_split("test", source, 48, labels)}

    lines = ["| model | storage | file size | PublicTest | PrivateTest | max change of a probability vs float32 |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.checkpoint or list_models():
            original = load_model(name, device="cpu")
            if original.card.get("storage_dtype", "float32") != "float32":
                print(f"skipping {name}: stored as {original.card['storage_dtype']}, not float32", file=sys.stderr)
                continue
            reference = {}
            for storage in STORAGE_DTYPES:
                folder = save_checkpoint(original.module, original.card, Path(tmp) / f"{name}_{storage}",
                                         storage=storage)
                model = load_model(folder, device="cpu")
                cells, change = [], 0.0
                for split, (x, y) in splits(trained_labels(original.card)).items():
                    probs = predict_arrays(model.module, x, model.card)
                    reference.setdefault(split, probs)
                    change = max(change, float(np.abs(probs - reference[split]).max()))
                    cells.append(f"{100 * (probs.argmax(1) == y).mean():.2f}%")
                size = (folder / WEIGHTS_FILE).stat().st_size / 2**20
                lines.append(f"| {name} | {storage} | {size:.1f} MB | {' | '.join(cells)} | {change:.4f} |")
        vgg = create_model("vgg19")
        for storage in STORAGE_DTYPES:
            folder = save_checkpoint(vgg, base_card(vgg, [0.5], [0.5]), Path(tmp) / f"vgg19_{storage}", storage=storage)
            size = (folder / WEIGHTS_FILE).stat().st_size / 2**20
            lines.append(f"| vgg19 (untrained, size only) | {storage} | {size:.1f} MB | | | |")
    report("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
