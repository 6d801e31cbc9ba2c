"""Every checkpoint in checkpoints/ loads, predicts, matches its card, and (with the data)
reproduces its card's PrivateTest accuracy."""
import numpy as np
import pytest

from ferlab import list_models, load_model
from ferlab.checkpoints import trained_labels
from ferlab.models import create_model
from tests.synthetic import make_arrays

SHIPPED_HERE = list_models()


@pytest.mark.parametrize("name", SHIPPED_HERE)
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
@pytest.mark.parametrize("name", SHIPPED_HERE)
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


def test_shipped_set_is_the_curated_zoo():
    """checkpoints/ holds exactly the zoo's list (ferlab.zoo.SHIPPED), and the audit's ensemble is in it."""
    from ferlab.zoo import AUDIT_ENSEMBLE, DEFAULT_MODEL, SHIPPED
    assert sorted(SHIPPED) == sorted(SHIPPED_HERE)
    assert DEFAULT_MODEL in SHIPPED and set(AUDIT_ENSEMBLE) <= set(list_models(labels="fer2013"))


@pytest.mark.parametrize("name", SHIPPED_HERE)
def test_model_card_readme_follows_the_hub_conventions(name):
    """checkpoints/<name>/README.md: Hub YAML metadata whose results are the card's, then the sections."""
    import yaml
    from ferlab.cards import model_card_readme
    model = load_model(name, device="cpu")
    text = (model.path / "README.md").read_text()
    assert text == model_card_readme(model.card, name), "regenerate with ferlab.cards.write_model_card"
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert {"library_name", "license", "tags", "datasets", "metrics", "model-index", "pipeline_tag"} <= set(meta)
    first = meta["model-index"][0]["results"][0]["metrics"][0]
    assert first["value"] == round(100 * model.card["metrics"]["test"]["accuracy"], 2)
    for section in ("## Intended use", "## Limits", "## Training data", "## Training procedure and evaluation"):
        assert section in body


def test_no_training_state_or_pickle_is_committed():
    """Run folders are working state: nothing pickled, no optimizer or resume state, lives in git."""
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    try:
        files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    committed = files.split()
    assert not [f for f in committed if f.endswith((".pt", ".pth", ".ckpt", ".pkl", ".pickle"))]
    assert not [f for f in committed if f.startswith(("runs/", "train/resume/"))]
