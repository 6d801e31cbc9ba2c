"""Every checkpoint in checkpoints/ loads, predicts, matches its card, and (with the data)
reproduces its card's PrivateTest accuracy."""
import numpy as np
import pytest

from ferlab import list_models, load_model
from ferlab.checkpoints import trained_labels
from ferlab.models import create_model
from tests.synthetic import make_arrays

SHIPPED = list_models()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_loads_and_predicts(name):
    model = load_model(name, device="cpu")
    card = model.card
    rebuilt = create_model(card["architecture"], **card["config"])
    assert card["params"] == sum(p.numel() for p in rebuilt.parameters())
    assert list(card["explainable_layers"]) == list(rebuilt.explainable_layers)
    assert (model.path / "model.safetensors").stat().st_size <= 25 * 1024 * 1024
    images, _ = make_arrays(2)
    probs = model.predict(list(images), detect=False)
    assert probs.shape == (14, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    for key in ("data", "command", "training", "mflops", "metrics"):
        assert key in card, key
    assert {"valid", "test", "test_full", "test_tta"} <= set(card["metrics"])
    other = "ferplus" if trained_labels(card) == "fer2013" else "fer2013"
    assert {f"test_{other}", f"test_{other}_tta"} <= set(card["metrics"]), "ship.py scores both label sets"


@pytest.mark.realdata
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_accuracy_reproduces(name):
    """PrivateTest accuracy from the shipped weights, predicted in this session.  The probabilities
    go through the audit's cache (keyed by weights hash and image fingerprint, in the session's own
    cache folder), so the mislabel test's pass over the same split is not paid for twice."""
    from ferlab.audit import audit
    model = load_model(name, device="cpu")
    result = audit([model], "test", progress=False)
    labels = result.labels if trained_labels(model.card) == "fer2013" else result.ferplus_majority
    scored = labels >= 0  # FER+ majority: images without one are not scored, as in ship.py
    predicted = result.probabilities[model.name].argmax(1)
    acc = float((predicted[scored] == labels[scored]).mean())
    assert abs(acc - model.card["metrics"]["test"]["accuracy"]) <= 0.003


def test_committed_training_states_fit_a_file_limit():
    """Resumable run folders in train/resume/ live in git: no file over the 25 MB a file may take."""
    from pathlib import Path
    resume = Path(__file__).resolve().parent.parent / "train" / "resume"
    files = [f for f in resume.rglob("*") if f.is_file()]
    assert files, "train/resume/ holds the shipped runs' states"
    too_big = [f"{f.relative_to(resume)}: {f.stat().st_size / 2**20:.1f} MB" for f in files
               if f.stat().st_size > 25 * 2**20]
    assert not too_big, too_big
