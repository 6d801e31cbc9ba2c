"""results/models.md: every shipped checkpoint beside the literature's reported numbers.

    python -m benchmarks.models [--repeats 30] [--out results/models.md]
    python -m benchmarks.models --latency-only [NAME ...] [--out results/latency_avx2.md]   # latencies only

Accuracy and macro-F1 come from each model card (written by ferlab-evaluate --update-card);
the ensemble rows (mean probabilities of all shipped models, and of the subset chosen on
PublicTest, with and without horizontal-flip TTA) and the CPU latencies are measured here.  A
second table scores every model, including the FER+-trained one, against the FER+ majority labels.
"""
import argparse
import time

import numpy as np

from benchmarks import device_label, report
from ferlab import list_models, load_model
from ferlab.cards import training_summary
from ferlab.checkpoints import metrics_key, trained_labels
from ferlab.data import load_fer2013, to_arrays
from ferlab.evaluation import ensemble_accuracy, predict_arrays, select_ensemble
from ferlab.labels import LABEL_SETS
from ferlab.metrics import classification_metrics
from ferlab.training import hardware

# Reported by the projects ferlab follows (../shared/seeds) and the papers they cite: not reproduced here.
LITERATURE = [
    ("VGG19 transfer, configuration 4 (ImageNet weights)", "000 VGG19 report", "59.11% on the 7,178 test images "
     "(macro-F1 0.59)"),
    ("Compact Keras CNN", "001 compact CNN report", "70.13% (test split not stated)"),
    ("Lightweight residual SE CNN", "003 residual-SE report", "71.86% FER2013 validation (mean over epochs, "
     "80/20 split of Training); 86.32% on FER+"),
    ("CNN / ResNet / MobileNetV2 / ViT", "004 comparison report", "62.12% / 58% / 42% / 80.43% (own 60/20/20 split "
     "of an augmented set)"),
    ("VGGNet, single network (Khairuddin & Chen 2021)", "cited by 000, 001", "73.28% PrivateTest"),
    ("Ensemble of CNNs (Pramerdorfer & Kampel 2016)", "cited by 000", "75.2% PrivateTest"),
]


def latency(model, repeats):
    module, card = model.module, model.card
    size = card["input_size"]
    out = {}
    for batch in (1, 64):
        x = np.random.default_rng(0).integers(0, 256, (batch, size, size), dtype=np.uint8)
        for _ in range(3):
            predict_arrays(module, x, card, model.device)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            predict_arrays(module, x, card, model.device)
            ts.append((time.perf_counter() - t) * 1000)
        out[batch] = float(np.median(ts))
    return out


def ensemble_rows(models) -> list[str]:
    """Mean probabilities of all shipped models, and of the subset that scores best on PublicTest
    (chosen there, with flip TTA, then reported once on PrivateTest)."""
    def predictions(images, tta):
        return {m.name: predict_arrays(m.module, images, m.card, m.device, tta=tta) for m in models}

    valid_images, valid_labels = to_arrays(load_fer2013("valid"))
    test_images, labels = to_arrays(load_fer2013("test"))   # decoded once for both passes
    valid_tta = predictions(valid_images, True)
    test, test_tta = predictions(test_images, False), predictions(test_images, True)
    chosen = select_ensemble(valid_tta, valid_labels)
    rows = []
    for title, names in ((f"ensemble of all {len(models)}", tuple(sorted(test))),
                         (f"ensemble chosen on PublicTest: {' + '.join(chosen)}", chosen)):
        metrics = {kind: classification_metrics(labels, np.mean([probs[n] for n in names], axis=0))
                   for kind, probs in (("plain", test), ("tta", test_tta))}
        public = ensemble_accuracy(valid_tta, names, valid_labels)
        rows.append(f"| {title} (mean probabilities) | | | {100 * public:.2f}% (TTA) | "
                    f"{100 * metrics['plain']['accuracy']:.2f}% | | {metrics['plain']['macro_f1']:.3f} | "
                    f"{100 * metrics['tta']['accuracy']:.2f}% | | | |")
    return rows


def ferplus_rows(models) -> list[str]:
    """The FER+ experiment: every model's PrivateTest predictions scored against the FER+ majority
    labels (rows with one), whichever labels it was trained on (ferlab-ship writes both)."""
    rows = []
    for m in models:
        c = m.card
        key = metrics_key(c, "test", "ferplus")
        if key not in c.get("metrics", {}):
            continue
        rows.append(f"| {m.name} (`{c['architecture']}`) | {LABEL_SETS[trained_labels(c)]} | "
                    f"{pct(c, metrics_key(c, 'valid', 'ferplus'))} | {pct(c, key)} | {pct(c, key, 'macro_f1')} | "
                    f"{pct(c, metrics_key(c, 'test', 'ferplus', tta=True))} | "
                    f"{pct(c, metrics_key(c, 'test', 'fer2013'))} | {c['metrics'][key].get('n', '')} |")
    if not rows:
        return []
    return ["", "FER+ experiment: PrivateTest scored against the FER+ majority labels (rows with a unique "
            "emotion majority; `python ferlab-evaluate --checkpoint NAME --labels ferplus`):", "",
            "| model | trained on | PublicTest vs FER+ | PrivateTest vs FER+ | macro-F1 | + flip TTA | "
            "PrivateTest vs FER2013 labels | n |", "|---|---|---|---|---|---|---|---|", *rows]


def pct(card, split, key="accuracy"):
    v = card.get("metrics", {}).get(split, {}).get(key)
    return "n/a" if v is None else (f"{100 * v:.2f}%" if key == "accuracy" else f"{v:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--latency-only", nargs="*", metavar="NAME",
                        help="only these checkpoints' latencies (all when none is named) on this machine")
    parser.add_argument("--out", help="also write the tables to this markdown file (results/models.md)")
    args = parser.parse_args(argv)
    if args.latency_only is not None:
        lines = [f"Latency on {hardware()}, median of {args.repeats} calls", "",
                 "| model | 1 image | batch of 64 |", "|---|---|---|"]
        for name in args.latency_only or list_models():
            lat = latency(load_model(name), args.repeats)
            lines.append(f"| {name} | {lat[1]:.1f} ms | {lat[64]:.1f} ms |")
        report("\n".join(lines) + "\n", args.out)
        return
    names = list_models(labels="fer2013")   # the FER+ model is scored against other labels: its own table
    device = device_label()
    lines = ["| model | params | MFLOPs | PublicTest | PrivateTest | full test (7,178) | macro-F1 (PrivateTest) | "
             f"PrivateTest + flip TTA | latency 1 image ({device}) | latency batch of 64 | trained |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    models = [load_model(n) for n in names]
    for m in models:
        c = m.card
        lat = latency(m, args.repeats)
        lines.append(f"| {m.name} (`{c['architecture']}`) | {c['params'] / 1e6:.2f} M | {c.get('mflops', 'n/a')} | "
                     f"{pct(c, 'valid')} | {pct(c, 'test')} | {pct(c, 'test_full')} | {pct(c, 'test', 'macro_f1')} | "
                     f"{pct(c, 'test_tta')} | {lat[1]:.1f} ms | {lat[64]:.1f} ms | {training_summary(c)} |")
    if len(models) >= 2:
        lines += ensemble_rows(models)
    lines += ferplus_rows(models + [load_model(n) for n in list_models(labels="ferplus")])
    lines += ["", "Reported in the literature (cited, not reproduced; splits differ as noted):", "",
              "| model | source | reported |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in LITERATURE]
    intro = ("Shipped checkpoints. Protocol: trained on Training, selected on PublicTest, reported once on "
             "PrivateTest. Accuracies are read from each model card (written by ferlab-ship); ensembles and "
             "latencies are measured by this run.\n\n")
    report(intro + "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
