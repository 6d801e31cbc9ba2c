"""Would a trained run help the shipped ensemble?  A selection step, on PublicTest only.

    ferlab-ensemble --candidate runs/my_run [--candidate ...] [--pool ferlab_best resnet_se ...]

Scores every model of the pool (default: each shipped checkpoint trained on the FER2013 labels)
and each candidate (a run folder or a checkpoint name) on PublicTest with flip TTA, beside the
plain PublicTest accuracy its card records (training measured it at export), then prints the subset ``select_ensemble`` chooses (mean flip-TTA probabilities) from the pool
alone and from the pool plus the candidates.  A candidate the second choice contains earns its
place in checkpoints/; PrivateTest is not read here (ferlab-ship reads it once, after).
"""
import argparse
import functools
from pathlib import Path

from ferlab.checkpoints import list_models, load_model, trained_labels
from ferlab.evaluation import ensemble_accuracy, predict_arrays, select_ensemble
from ferlab.training import load_split


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", action="append", required=True, help="run folder or checkpoint name")
    parser.add_argument("--pool", nargs="+", help="checkpoint names (default: every FER2013-trained one)")
    parser.add_argument("--checkpoints", help="where the pool's checkpoints live (default: checkpoints/)")
    parser.add_argument("--data", help="data source")
    args = parser.parse_args(argv)

    @functools.cache
    def public_test(size):
        return load_split("valid", args.data, size)

    candidates = {Path(c).name: c for c in args.candidate}
    pool = args.pool or [n for n in list_models(args.checkpoints, labels="fer2013") if n not in candidates]
    folders = {n: (Path(args.checkpoints) / n if args.checkpoints else n) for n in pool} | candidates
    probs, labels = {}, None
    for name, folder in folders.items():
        model = load_model(folder)
        if trained_labels(model.card) != "fer2013":
            raise SystemExit(f"{name} was trained on {trained_labels(model.card)} labels; the ensemble is FER2013's")
        images, labels = public_test(model.card["input_size"])
        probs[name] = predict_arrays(model.module, images, model.card, model.device, tta=True)
        print(f"{name}: PublicTest {100 * model.card['metrics']['valid']['accuracy']:.2f}%, "
              f"flip TTA {100 * (probs[name].argmax(1) == labels).mean():.2f}%")

    def accuracy(subset):
        return 100 * ensemble_accuracy(probs, subset, labels)

    choices = {}
    for key, names in (("pool", pool), ("with_candidates", pool + list(candidates))):
        chosen = select_ensemble({n: probs[n] for n in names}, labels)
        choices[key] = (chosen, accuracy(chosen))
        print(f"{'pool' if key == 'pool' else 'pool + candidates'} ({len(names)}): chosen {' + '.join(chosen)}, "
              f"PublicTest (flip TTA) {accuracy(chosen):.2f}%; all {len(names)}: {accuracy(names):.2f}%")
    joined = [c for c in candidates if c in choices["with_candidates"][0]]
    print("candidates chosen: " + (", ".join(joined) if joined else "none"))
    return choices


if __name__ == "__main__":
    main()
