"""Weight soups (Wortsman et al. 2022, "Model soups"): the average of the weights of several runs
fine-tuned from one starting point often scores better than each of them, at no cost at inference.

A soup is a stage of a recipe: a YAML file with a ``soup`` list in the place of a training config,

    name: vit
    soup: [runs/vit_stage5, runs/vit_stage6a, runs/vit_stage6b]

``make_soup`` builds the greedy soup: the ingredients sorted by PublicTest accuracy, each added to
the average only if the average's PublicTest accuracy does not drop.  It reads PublicTest only: a
soup is a selection, and selection never reads PrivateTest.  The exported folder is a run like any
other (``model.safetensors`` + ``card.json``), so ``ferlab-ship --run`` ships it.
"""
from __future__ import annotations

import copy
import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints import FERClassifier, base_card, load_model, save_checkpoint, trained_labels
from .data import default_source, fingerprint
from .evaluation import predict_arrays
from .metrics import classification_metrics

SOUP_LOG = "soup.csv"   # each ingredient's PublicTest accuracy and each step of the greedy soup


@dataclass
class SoupConfig:
    name: str
    soup: list[str]      # the ingredients: run folders or checkpoint names

    @classmethod
    def from_file(cls, path: str | Path) -> "SoupConfig":
        import yaml
        raw = yaml.safe_load(Path(path).read_text()) or {}
        unknown = sorted(set(raw) - {"name", "soup"})
        if unknown:
            raise ValueError(f"{path}: unknown soup keys {unknown}; a soup stage has only name and soup")
        if not isinstance(raw.get("soup"), list) or len(raw["soup"]) < 2:
            raise ValueError(f"{path}: soup must list at least two runs to average")
        return cls(name=raw["name"], soup=[str(s) for s in raw["soup"]])


def is_soup(path: str | Path) -> bool:
    """Whether a recipe stage is a soup (it has a ``soup`` key) rather than a training config."""
    import yaml
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return isinstance(raw, dict) and "soup" in raw


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor over ``states`` (BatchNorm's running statistics
    included); integer tensors (BatchNorm's batch counters) are the first state's."""
    return {k: (torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v)
            for k, v in states[0].items()}


def check_ingredients(models: list[FERClassifier]) -> None:
    """Weights average meaningfully only between runs of one network, input and training set."""
    first = models[0]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"soup ingredients need distinct names (their folders' names): {names}")
    for m in models[1:]:
        for what, get in (("architecture", lambda c: c["architecture"]), ("config", lambda c: c["config"]),
                          ("normalization", lambda c: (c.get("mean"), c.get("std"))), ("labels", trained_labels),
                          ("training data", lambda c: c.get("data", {}).get("train_fingerprint"))):
            if get(m.card) != get(first.card):
                raise ValueError(f"{m.name} and {first.name} differ in {what} ({get(m.card)} vs {get(first.card)}): "
                                 "a soup averages runs of one network trained on the same data")


def greedy_soup(models: list[FERClassifier], images: np.ndarray, labels: np.ndarray):
    """Wortsman et al.'s greedy soup on (``images``, ``labels``): returns the chosen ingredients'
    indices, the averaged weights and the log of each step."""
    module = copy.deepcopy(models[0].module).cpu().eval()
    states = [{k: v.detach().cpu() for k, v in m.module.state_dict().items()} for m in models]

    def accuracy(state) -> float:
        module.load_state_dict(state)
        return float((predict_arrays(module, images, models[0].card, torch.device("cpu")).argmax(1) == labels).mean())

    alone = [accuracy(s) for s in states]
    order = sorted(range(len(models)), key=lambda i: -alone[i])     # stable: ties keep the listed order
    log = [{"step": "alone", "ingredients": models[i].name, "accuracy": alone[i], "kept": ""} for i in range(len(models))]
    chosen, best = [order[0]], alone[order[0]]
    for i in order[1:]:
        trial = average_weights([states[j] for j in chosen + [i]])
        acc = accuracy(trial)
        kept = acc >= best
        log.append({"step": "add", "ingredients": " + ".join(models[j].name for j in chosen + [i]),
                    "accuracy": acc, "kept": "yes" if kept else "no"})
        if kept:
            chosen, best = chosen + [i], acc
    return chosen, average_weights([states[j] for j in chosen]), log, alone


def make_soup(cfg: SoupConfig, source: str | None = None, out_dir: str | Path | None = None,
              command: str | None = None) -> Path:
    """Build ``cfg``'s greedy soup on PublicTest and export it to ``out_dir`` (default runs/<name>)."""
    from .training import load_split, run_record
    start = time.perf_counter()
    out = Path(out_dir or Path("runs") / cfg.name)
    models = [load_model(s, device="cpu") for s in cfg.soup]
    check_ingredients(models)
    first = models[0]
    source = source or default_source()
    images, labels = load_split("valid", source, first.card["input_size"], trained_labels(first.card))
    chosen, state, log, alone = greedy_soup(models, images, labels)
    module = copy.deepcopy(first.module).cpu().eval()
    module.load_state_dict(state)
    probs = predict_arrays(module, images, first.card, torch.device("cpu"))
    probs_tta = predict_arrays(module, images, first.card, torch.device("cpu"), tta=True)
    ingredients = [dict(run_record(m), path=path, valid_accuracy=accuracy,
                        initialized_from=(m.card.get("training", {}).get("initialized_from") or {}).get("name"))
                   for m, path, accuracy in zip(models, cfg.soup, alone)]
    picked = [ingredients[i] for i in chosen]
    card = base_card(module, first.card["mean"], first.card["std"])
    card.update({
        "name": cfg.name, "soup_config": asdict(cfg), "command": command,
        "data": dict(first.card.get("data", {}), source=source, valid_fingerprint=fingerprint(images, labels)),
        "training": {"soup_of": ingredients, "chosen": [p["name"] for p in picked],
                     "wall_seconds": round(sum(p["wall_seconds"] or 0 for p in picked), 1),
                     "soup_seconds": round(time.perf_counter() - start, 1),
                     "hardware": picked[0]["hardware"], "torch": torch.__version__},
        "mflops": first.card.get("mflops"),
        "metrics": {"valid": classification_metrics(labels, probs), "valid_tta": classification_metrics(labels, probs_tta)},
    })
    save_checkpoint(module, card, out)
    with open(out / SOUP_LOG, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "ingredients", "accuracy", "kept"])
        writer.writeheader()
        writer.writerows({**row, "accuracy": f"{row['accuracy']:.4f}"} for row in log)
    return out
