"""What float16 and int8 storage cost in accuracy and save in bytes, per shipped checkpoint.

    python -m benchmarks.storage [--checkpoint NAME ...] [--out results/storage.md [--merge [--drop-missing]]]

Each checkpoint's float32 weights are saved with every storage (``ferlab.checkpoints.save_checkpoint``)
and loaded back through ``load_model``, side by side in one run (``int8 gptq``: the int8 file with
GPTQ's error-compensating codes, calibrated on 1,024 Training images as ``int8_rounding: gptq``
does); accuracy on PublicTest and PrivateTest (against the labels the model was trained on: FER+
majority for ``ferplus``), and the largest change of any class probability against float32.  The last rows give
the file sizes of an untrained ``vgg19`` (20 M parameters, VGG19-BN features as shipped): sizes do
not depend on training, and they are why vgg19 ships in int8 (float16 is over the 25 MB limit).
A checkpoint shipped below float32 is scored as shipped, beside the float32 accuracy its export
measured on PublicTest (the float32 weights do not ship).  ``--merge`` re-measures only the named
checkpoints and keeps the other models' rows of ``--out`` (a newly shipped checkpoint needs only its
own rows, not a re-run of every model in every storage).
"""
import functools
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import checkpoints_parser, report

from ferlab import list_models, load_model
from ferlab.checkpoints import (STORAGE_DTYPES, WEIGHTS_FILE, base_card, resolve, save_checkpoint,
                               trained_labels)
from ferlab.evaluation import predict_arrays
from ferlab.models import create_model
from ferlab.quantization import calibration_images, gptq_int8
from ferlab.training import load_split


def main(argv=None):
    parser = checkpoints_parser(__doc__)
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of --out for models not named by --checkpoint")
    parser.add_argument("--drop-missing", action="store_true",
                        help="with --merge: drop the rows of models that are no longer checkpoints (retired)")
    args = parser.parse_args(argv)
    if args.merge and not (args.out and args.checkpoint):
        parser.error("--merge needs --out (the table to merge into) and --checkpoint (the models to re-measure)")
    from ferlab.data import default_source
    source = str(args.source or default_source())

    @functools.cache  # each model is scored against the labels it was trained on; decoded once per set
    def splits(labels):
        return {"PublicTest": load_split("valid", source, 48, labels),
                "PrivateTest": load_split("test", source, 48, labels)}

    @functools.cache
    def train_images():  # GPTQ's calibration set: unlabeled Training images, as the export takes them
        return load_split("train", source, 48)[0]

    lines = ["| model | storage | file size | PublicTest | PrivateTest | max change of a probability vs float32 |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.checkpoint or list_models():
            original = load_model(name, device="cpu")
            model_splits = splits(trained_labels(original.card))
            if original.card.get("storage_dtype", "float32") != "float32":
                lines += shipped_quantized_rows(name, original, model_splits)
                continue
            reference = {}
            for storage in (*STORAGE_DTYPES, "int8 gptq"):
                tensors = (gptq_int8(original.module, calibration_images(train_images()), original.card)
                           if storage == "int8 gptq" else None)
                folder = save_checkpoint(original.module, original.card, Path(tmp) / f"{name}_{storage}",
                                         storage=storage.split()[0], tensors=tensors)
                model = load_model(folder, device="cpu")
                cells, change = [], 0.0
                for split, (x, y) in model_splits.items():
                    probs = predict_arrays(model.module, x, model.card)
                    reference.setdefault(split, probs)
                    change = max(change, float(np.abs(probs - reference[split]).max()))
                    cells.append(f"{100 * (probs.argmax(1) == y).mean():.2f}%")
                size = (folder / WEIGHTS_FILE).stat().st_size / 2**20
                lines.append(f"| {name} | {storage} | {size:.1f} MB | {' | '.join(cells)} | {change:.4f} |")
        vgg = create_model("vgg19", batch_norm=True)
        for storage in STORAGE_DTYPES:
            folder = save_checkpoint(vgg, base_card(vgg, [0.5], [0.5]), Path(tmp) / f"vgg19_{storage}", storage=storage)
            size = (folder / WEIGHTS_FILE).stat().st_size / 2**20
            lines.append(f"| vgg19 (untrained, size only) | {storage} | {size:.1f} MB | | | |")
    if args.merge and Path(args.out).exists():
        lines = merge_rows(Path(args.out).read_text().splitlines(), lines,
                           present=set(list_models()) if args.drop_missing else None)
    report("\n".join(lines) + "\n", args.out)


def merge_rows(old: list[str], new: list[str], present: set[str] | None = None) -> list[str]:
    """One table from ``new`` (header first) and the rows of ``old`` for models ``new`` does not
    measure (and, given ``present``, that are still checkpoints): grouped by model in alphabetical
    order, the size-only rows last."""
    def model(row):
        return row.split(" | ")[0].removeprefix("| ")

    header, fresh = new[:2], new[2:]
    measured = {model(row) for row in fresh}
    kept = [row for row in old if row.startswith("| ") and not row.startswith("| model |")
            and model(row) not in measured
            and (present is None or model(row) in present or "(untrained" in model(row))]
    rows = kept + fresh
    order = sorted({model(row) for row in rows}, key=lambda m: ("(untrained" in m, m))
    return header + [row for m in order for row in rows if model(row) == m]


def shipped_quantized_rows(name, model, splits) -> list[str]:
    """A checkpoint that ships below float32 (vgg19: int8) has no float32 weights here to compare
    with: its accuracy is measured now, and the float32 comparison is the one its export made on
    PublicTest (``storage_check`` in the card)."""
    cells = []
    for x, y in splits.values():
        probs = predict_arrays(model.module, x, model.card)
        cells.append(f"{100 * (probs.argmax(1) == y).mean():.2f}%")
    size = (resolve(name) / WEIGHTS_FILE).stat().st_size / 2**20
    check = model.card.get("storage_check")
    change = f"{check['max_probability_change']:.4f} (PublicTest, at export)" if check else "not recorded"
    storage = model.card["storage_dtype"] + (" gptq" if check and check.get("rounding") == "gptq" else "")
    rows = [f"| {name} | {storage} (shipped) | {size:.1f} MB | {' | '.join(cells)} | {change} |"]
    if check:
        rows.append(f"| {name} | float32 (at export, not shipped) | | {100 * check['accuracy_float32']:.2f}% | | |")
    return rows


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
