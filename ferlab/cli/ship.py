"""Ship a training run: copy its exported checkpoint into checkpoints/<name>, evaluate it once on
PublicTest, PrivateTest and the full test (with and without flip TTA) into its card, against the
labels it was trained on and, for PublicTest and PrivateTest, the other label set too (FER2013 or
FER+ majority), and put its training log, curves, confusion matrices and classification reports
in results/<name>/.

    ferlab-ship --run runs/resnet_se [--name my_resnet] [--note "..."]

The run must have been exported by ferlab-train (model.safetensors + card.json in the run
folder).  This is the one place PrivateTest is read for a model: once, after selection.
"""
import argparse
import shutil
from pathlib import Path

from ferlab.cards import write_model_card
from ferlab.checkpoints import CARD_FILE, WEIGHTS_FILE, checkpoints_dir, read_card, trained_labels, update_card
from ferlab.data import DataSourceError
from ferlab.soup import SOUP_LOG
from ferlab.cli.evaluate import evaluate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training output folder")
    parser.add_argument("--name", help="checkpoint name (default: the run's config name)")
    parser.add_argument("--note", help="a note for the card (e.g. why training stopped)")
    parser.add_argument("--data", help="data source")
    parser.add_argument("--checkpoints", help="where checkpoints live (default: checkpoints/ or FERLAB_CHECKPOINTS)")
    parser.add_argument("--results", default="results", help="where results live")
    args = parser.parse_args(argv)
    run = Path(args.run)
    card = read_card(run)
    name = args.name or card.get("name") or run.name
    dest = Path(args.checkpoints or checkpoints_dir()) / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in (WEIGHTS_FILE, CARD_FILE):
        shutil.copy2(run / f, dest / f)
    if args.note:
        update_card(dest, notes=args.note)
    results = Path(args.results) / name
    results.mkdir(parents=True, exist_ok=True)
    for f in ("log.csv", "curves.png", SOUP_LOG):
        if (run / f).exists():
            shutil.copy2(run / f, results / f)
        elif (results / f).exists():   # a previous model's under this name: it does not describe this one
            (results / f).unlink()
    own = trained_labels(read_card(dest))
    other = "ferplus" if own == "fer2013" else "fer2013"
    # against its own labels on every split; PublicTest and PrivateTest also against the other label
    # set, so FER2013 and FER+ models can be compared on the same (FER+ majority) labels
    for split, labels in (("valid", own), ("test", own), ("test_full", own), ("valid", other), ("test", other)):
        for tta in (False, True):
            try:
                m = evaluate(str(dest), split, tta, args.data, results, update=True, labels_kind=labels)
            except DataSourceError as exc:
                if labels == own:
                    raise
                print(f"{name}: not scored against {labels} labels: {exc}")
                break
            print(f"{name} {split} vs {labels}{' +TTA' if tta else ''}: accuracy {m['accuracy']:.4f} "
                  f"macro-F1 {m['macro_f1']:.4f}")
    write_model_card(dest, name)
    print(f"shipped {dest}")
    return dest


if __name__ == "__main__":
    main()
