"""The curated model zoo, in one place: what ``checkpoints/`` ships, what the lab and
``ferlab.analyze`` open with, and which models the label audit ensembles.

One checkpoint per architecture or idea that teaches something; a name never moves to other
weights.  Retired checkpoints keep their records in ``docs/experiments/retired/``.
"""
from __future__ import annotations

# menu order: the photo default first, then the CNN it was fine-tuned from, then the other families
SHIPPED = ("ferlab_photo", "ferlab_best", "resnet_se", "mobilenet_v2", "vgg19", "vit", "ferplus")

# ferlab_best fine-tuned on photo-pipeline crops: the best on photo-like faces, as good as ferlab_best on crops
DEFAULT_MODEL = "ferlab_photo"

# The label audit's ensemble (Dataset browser, benchmarks/mislabel.py), chosen on PublicTest among
# the shipped FER2013-trained models: FER+ precision@100 0.93 there (cleanlab on the same
# probabilities 0.91), the best of the 26 subsets tried, and without vgg19 (1.8 GFLOPs per image),
# which keeps the browser's cold scan short.  FER+-trained models never join: the audit is graded
# against the FER+ votes.
AUDIT_ENSEMBLE = ("ferlab_best", "ferlab_photo", "resnet_se", "mobilenet_v2")


def default_model(available: list[str]) -> str | None:
    """The model to open with: ``DEFAULT_MODEL``, else the first shipped one present, else the first."""
    for name in (DEFAULT_MODEL, *SHIPPED):
        if name in available:
            return name
    return available[0] if available else None


def audit_ensemble(fer2013_models: list[str]) -> list[str]:
    """The audit's models among ``fer2013_models`` (checkpoints trained on the FER2013 labels):
    ``AUDIT_ENSEMBLE`` where present, else all of them (your own checkpoint folder)."""
    chosen = [n for n in AUDIT_ENSEMBLE if n in fer2013_models]
    return chosen or list(fer2013_models)
