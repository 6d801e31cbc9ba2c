"""How well does the suspect ranking find FER2013 labels that the FER+ annotators overrule?

    python -m benchmarks.mislabel [--checkpoint resnet_se --checkpoint ...]   (default: ferlab.zoo.AUDIT_ENSEMBLE) [--out results/mislabel.md]

Weights of the suspect score are tuned on PublicTest (valid); the table is measured on PrivateTest
(test): ferlab's suspect score, cleanlab's default ranking (``get_label_quality_scores``,
self-confidence) on the same ensemble probabilities, and a random ranking, whose expected
precision is the base rate.  Ground truth: FER+ majority != FER2013 label (see ferlab.audit).
"""
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks import checkpoints_parser, report

from ferlab import list_models
from ferlab.audit import audit, ranking_metrics, tune_suspect_weights
from ferlab.zoo import audit_ensemble


def table(test, weights=None, seeds=20):
    from cleanlab.rank import get_label_quality_scores
    wrong, evaluable = test.ferplus_wrong()
    ens = test.ensemble
    rows = {"ferlab suspect score": ranking_metrics(test.suspect_score, wrong, evaluable),
            "cleanlab get_label_quality_scores (default)": ranking_metrics(
                -get_label_quality_scores(test.labels, ens), wrong, evaluable)}
    rng = np.random.default_rng(0)
    randoms = [ranking_metrics(rng.random(len(test.labels)), wrong, evaluable) for _ in range(seeds)]
    rows[f"random ranking (mean of {seeds})"] = {k: float(np.mean([r[k] for r in randoms])) for k in randoms[0]}
    keys = ["precision@50", "precision@100", "precision@200", "recall@200", "auroc"]
    lines = [f"PrivateTest, {rows['ferlab suspect score']['n']} rows with a FER+ majority; "
             f"{100 * rows['ferlab suspect score']['base_rate']:.1f}% of them have a FER2013 label the FER+ "
             f"majority overrules. Models: {', '.join(test.probabilities)}. Suspect-score weights (self-confidence, "
             f"margin, disagreement) tuned on PublicTest: {weights or test.weights}.", "",
             "| ranking | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n", rows


def main(argv=None):
    args = checkpoints_parser(__doc__).parse_args(argv)
    models = args.checkpoint or audit_ensemble(list_models(labels="fer2013"))  # never a FER+-trained model
    if not models:
        sys.exit("no checkpoints: train one first")
    weights = tune_suspect_weights(audit(models, "valid", args.source, progress=False))
    test = audit(models, "test", args.source, progress=False, weights=weights)
    text, rows = table(test, weights)
    report(text, args.out)
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"models": list(test.probabilities), "weights": list(weights), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
